#!/usr/bin/env bash
# As root: N user-style calls per loss and held-out speech file, each scored with score.py.
# Usage: sweep.sh OUTDIR N [SPEECHDIR]   (LOSSES="0 5 10 20" and SPEECH="f2 m3" by default;
# SPEECHDIR from make-speech.sh). Prints one line per call: loss, speech, run, score JSON,
# and each end's CPU (% of one core from connected to the end, from the summaries).
set -uo pipefail
out=$1; n=$2; speech=${3:-$out/speech}
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
[ -f "$speech/f2.wav" ] || bash "$here/make-speech.sh" "$speech"
python=${PYTHON:-$root/target/bench-venv/bin/python}
for loss in ${LOSSES:-0 5 10 20}; do
  bash "$here/netns.sh" up "$loss"
  for sp in ${SPEECH:-f2 m3}; do
    for i in $(seq 1 "$n"); do
      d=$out/l$loss-$sp-$i
      bash "$here/call.sh" "$d" "$speech/$sp.wav" >/dev/null 2>&1
      cpu=$("$python" -c 'import json,sys
def cpu(path):
    try:
        return json.load(open(path)).get("cpu_percent_of_one_core")
    except (OSError, ValueError):
        return None
print(json.dumps({"caller": cpu(sys.argv[1]), "callee": cpu(sys.argv[2])}))' "$d/caller.json" "$d/callee.json")
      echo "loss $loss $sp $i $("$python" "$here/score.py" "$speech/$sp.wav" "$d/heard.wav" 2>/dev/null) cpu_percent_of_one_core $cpu"
    done
  done
done
bash "$here/netns.sh" down
