"""Score a received recording against its reference: PESQ-WB and PESQ-NB (ITU-T P.862.2 and
P.862, the `pesq` package wrapping the ITU reference code) and STOI (`pystoi`).

Usage: score.py REFERENCE.wav RECEIVED.wav LAG_SAMPLES
Both files are 48 kHz mono 16-bit; LAG_SAMPLES is where the reference starts in the
recording (found by cross-correlation). The recording is cut to the reference's span,
resampled to 16 kHz (PESQ-WB, STOI) and 8 kHz (PESQ-NB), and scored. Prints one JSON
object. `benches/setup-scoring.sh` makes a Python with these packages.
"""

import json
import sys
import wave

import numpy as np
from pesq import pesq
from pystoi import stoi
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
    ref16, deg16 = resample_poly(ref, 1, 3), resample_poly(deg, 1, 3)
    ref8, deg8 = resample_poly(ref, 1, 6), resample_poly(deg, 1, 6)
    print(json.dumps({
        "pesq_wb": round(float(pesq(16000, ref16, deg16, "wb")), 3),
        "pesq_nb": round(float(pesq(8000, ref8, deg8, "nb")), 3),
        "stoi": round(float(stoi(ref16, deg16, 16000, extended=False)), 3),
    }))


if __name__ == "__main__":
    main()
