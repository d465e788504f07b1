#!/usr/bin/env bash
# Build first: cargo build --release -p sotto-engine --bin sotto && cargo build --release -p sotto-signaling --bin sotto-signaling --features server
# As root, after netns.sh up LOSS. Score: target/bench-venv/bin/python benches/userstyle/score.py SPEECH.wav OUTDIR/heard.wav
# One user-style call: signaling in sx, callee in sb (silence in, recording out), caller in
# sa (speech in). Usage: call.sh OUTDIR SPEECH.wav [extra caller args]
set -uo pipefail
out=$1; speech=$2; shift 2
bin=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
mkdir -p "$out"; rm -rf "$out"/sig "$out"/a "$out"/b
ip netns exec sx "$bin/sotto-signaling" --listen 10.77.0.1:7000 --data-dir "$out/sig" >"$out/sig.log" 2>&1 &
sig=$!
sleep 0.5
srv=ws://10.77.0.1:7000/v1/ws
"$bin/sotto" --data-dir "$out/a" id new --name Ana >/dev/null 2>&1
"$bin/sotto" --data-dir "$out/b" id new --name Ben > "$out/b-id.txt" 2>&1
bid=$("$bin/sotto" --data-dir "$out/b" id show 2>/dev/null | awk "/id:/ {print \$2}" | head -1)
ip netns exec sb "$bin/sotto" --data-dir "$out/b" answer --server $srv --input silence --output "$out/heard.wav" >"$out/callee.json" 2>"$out/callee.log" &
callee=$!
sleep 1
ip netns exec sa "$bin/sotto" --data-dir "$out/a" call "$bid" --server $srv --input "$speech" --output null "$@" >"$out/caller.json" 2>"$out/caller.log"
wait $callee
kill $sig 2>/dev/null; wait $sig 2>/dev/null
true
