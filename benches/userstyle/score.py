"""score.py REF.wav DEG.wav: finds where REF starts in DEG (cross-correlation over the first
4 s of lag) and prints PESQ-WB, the lag in ms and the share of the reference's 100 ms windows
whose energy came through (a cut start shows as a low share). It also aligns each 200 ms
window of speech on its own (within 100 ms of the global lag) and reports how the delay
moved during speech: the spread of the windows' delays inside each stretch of speech (the
widest, and the median over stretches) and the steps of 20 ms or more between neighbouring
windows."""
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

def delay_track(ref, deg, lag, win=9600, search=4800):
    """Per 200 ms window of loud reference: (window index, its own lag in samples)."""
    rms = np.array([np.sqrt(np.mean(ref[i:i + win] ** 2)) for i in range(0, len(ref) - win, win)])
    track = []
    for k, level in enumerate(rms):
        if level < rms.max() * 0.1:
            continue
        piece = ref[k * win:(k + 1) * win]
        lo = max(0, k * win + lag - search)
        hi = min(len(deg), (k + 1) * win + lag + search)
        seg = deg[lo:hi]
        if len(seg) < win:
            continue
        c = fftconvolve(seg, piece[::-1], mode="valid")
        norm = np.sqrt(np.convolve(seg ** 2, np.ones(win), mode="valid") * np.sum(piece ** 2)) + 1e-9
        c = c / norm
        best = int(np.argmax(c))
        if c[best] < 0.5:
            continue  # too damaged to place (a concealed stretch)
        track.append((k, lo + best - k * win))
    return track

track = delay_track(ref, deg, lag)
spreads, steps = [], 0
run = []
for i, (k, l) in enumerate(track):
    if run and k != run[-1][0] + 1:
        spreads.append(max(x for _, x in run) - min(x for _, x in run)); run = []
    if run and abs(l - run[-1][1]) >= 960:
        steps += 1
    run.append((k, l))
if run:
    spreads.append(max(x for _, x in run) - min(x for _, x in run))
print(json.dumps({"pesq_wb": round(float(pesq(16000, resample_poly(ref, 1, 3), resample_poly(d, 1, 3), "wb")), 3),
                  "lag_ms": round(lag / 48, 1), "speech_windows_heard": round(came, 3),
                  "delay_spread_widest_ms": round(max(spreads, default=0) / 48, 1),
                  "delay_spread_median_ms": round(float(np.median(spreads)) / 48, 1) if spreads else 0.0,
                  "delay_steps_20ms": steps, "windows_placed": len(track)}))
