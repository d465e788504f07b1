#!/usr/bin/env bash
# Voice-call quality and cost on loopback: PESQ-WB (ITU-T P.862.2) of received speech
# against the reference, mouth-to-ear delay, and CPU per call. Each reference WAV in
# benches/data is sent through a real call (two engines, in-process signaling, WebRTC over
# loopback) RUNS times at BITRATE bit/s with the release build of the one_to_one_voice
# example; the table goes to stdout, the raw records to target/bench-voice/results.jsonl.
#
#   bash benches/voice.sh                # 3 runs per file at 32 kbit/s
#   RUNS=5 BITRATE=24000 bash benches/voice.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
BITRATE=${BITRATE:-32000}
OUT=target/bench-voice
mkdir -p "$OUT"

PYTHON=$(bash benches/setup-scoring.sh)
cargo build --release --locked -p sotto-examples --example one_to_one_voice
BIN=target/release/examples/one_to_one_voice

: > "$OUT/results.jsonl"
for ref in benches/data/speech-*.wav; do
    for run in $(seq 1 "$RUNS"); do
        rec="$OUT/$(basename "$ref" .wav)-$run.wav"
        line=$("$BIN" --input "$ref" --output "$rec" --bitrate "$BITRATE")
        lag=$(echo "$line" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["lag_samples"])')
        score=$("$PYTHON" benches/score.py "$ref" "$rec" "$lag")
        echo "$line" | "$PYTHON" -c '
import json, sys
call = json.load(sys.stdin)
score = json.loads(sys.argv[1])
print(json.dumps({"file": sys.argv[2], "run": int(sys.argv[3]), "bitrate": int(sys.argv[4]),
    **score, "mouth_to_ear_ms": call["mouth_to_ear_ms"], "correlation": call["correlation"],
    "cpu_percent_of_one_core": call["cpu_percent_of_one_core"],
    "jitter_buffer_mean_ms": call["callee"]["received"]["jitter_buffer_mean_ms"],
    "payload_kbps": call["caller"]["sent"]["payload_kbps"]}))' "$score" "$(basename "$ref")" "$run" "$BITRATE" >> "$OUT/results.jsonl"
        tail -n1 "$OUT/results.jsonl"
    done
done

"$PYTHON" - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def col(k): return [r[k] for r in rows]
print()
print("| file | runs | PESQ-WB mean (min) | PESQ-NB mean | mouth-to-ear ms mean (max) | CPU % of one core, both ends, mean (max) | payload kbit/s |")
print("|---|---|---|---|---|---|---|")
for f in sorted({r["file"] for r in rows}):
    rs = [r for r in rows if r["file"] == f]
    wb = [r["pesq_wb"] for r in rs]; nb = [r["pesq_nb"] for r in rs]
    m2e = [r["mouth_to_ear_ms"] for r in rs]; cpu = [r["cpu_percent_of_one_core"] for r in rs]
    kbps = [r["payload_kbps"] for r in rs]
    print(f"| {f} | {len(rs)} | {statistics.mean(wb):.2f} ({min(wb):.2f}) | {statistics.mean(nb):.2f} | "
          f"{statistics.mean(m2e):.1f} ({max(m2e):.1f}) | {statistics.mean(cpu):.2f} ({max(cpu):.2f}) | {statistics.mean(kbps):.1f} |")
print(f"| all | {len(rows)} | {statistics.mean(col('pesq_wb')):.2f} ({min(col('pesq_wb')):.2f}) | "
      f"{statistics.mean(col('pesq_nb')):.2f} | {statistics.mean(col('mouth_to_ear_ms')):.1f} ({max(col('mouth_to_ear_ms')):.1f}) | "
      f"{statistics.mean(col('cpu_percent_of_one_core')):.2f} ({max(col('cpu_percent_of_one_core')):.2f}) | "
      f"{statistics.mean(col('payload_kbps')):.1f} |")
PY
