"""score.py REF.wav DEG.wav: finds where REF starts in DEG (cross-correlation over the first
4 s of lag) and prints PESQ-WB, the lag in ms and the share of the reference's 100 ms windows
whose energy came through (a cut start shows as a low share)."""
import json, sys, wave
import numpy as np
from pesq import pesq
from scipy.signal import resample_poly, fftconvolve

def read(p):
    with wave.open(p, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)

ref, deg = read(sys.argv[1]), read(sys.argv[2])
if np.abs(deg).max() < 1:
    print(json.dumps({"pesq_wb": None, "silent": True})); sys.exit()
n = min(len(deg), len(ref) + 48000 * 4)
corr = fftconvolve(deg[:n], ref[::-1], mode="full")[len(ref) - 1:]
lag = int(np.argmax(corr[: 48000 * 4]))
d = deg[lag:lag + len(ref)]
if len(d) < len(ref):
    d = np.concatenate([d, np.zeros(len(ref) - len(d))])
w = 4800
re = np.array([np.mean(ref[i:i+w]**2) for i in range(0, len(ref) - w, w)])
de = np.array([np.mean(d[i:i+w]**2) for i in range(0, len(ref) - w, w)])
loud = re > re.max() * 1e-3
came = float(np.mean(de[loud] > re[loud] * 0.05))
print(json.dumps({"pesq_wb": round(float(pesq(16000, resample_poly(ref, 1, 3), resample_poly(d, 1, 3), "wb")), 3),
                  "lag_ms": round(lag / 48, 1), "speech_windows_heard": round(came, 3)}))
