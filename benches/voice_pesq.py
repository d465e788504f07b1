"""Score a received recording against its reference with ITU-T P.862.2 (PESQ-WB).

Usage: voice_pesq.py REFERENCE.wav RECEIVED.wav LAG_SAMPLES
Both files are 48 kHz mono 16-bit; LAG_SAMPLES is where the reference starts in the
recording (the example measured it by cross-correlation). Both are resampled to 16 kHz,
the rate P.862.2 is defined at, and scored with the `pesq` package (the ITU reference
code). Prints one JSON object.
"""

import json
import sys
import wave

import numpy as np
from pesq import pesq
from scipy.signal import resample_poly


def read(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != 48000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: expected 48 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)


def main():
    reference, received, lag = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ref = read(reference)
    deg = read(received)[lag:lag + len(ref)]
    if len(deg) < len(ref):
        deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    ref16 = resample_poly(ref, 1, 3)
    deg16 = resample_poly(deg, 1, 3)
    score_wb = pesq(16000, ref16, deg16, "wb")
    score_nb = pesq(8000, resample_poly(ref, 1, 6), resample_poly(deg, 1, 6), "nb")
    print(json.dumps({"pesq_wb": round(score_wb, 3), "pesq_nb": round(score_nb, 3)}))


if __name__ == "__main__":
    main()
