#!/usr/bin/env bash
# Build first: cargo build --release -p sotto-engine --bin sotto -p sotto-signaling -p sotto-sfu
# As root, after netns.sh up LOSS (loss from the first datagram, both directions, on the
# bridge). Score: target/bench-venv/bin/python benches/userstyle/score.py SPEECH.wav OUTDIR/rec/*.wav
# One user-style group call through the SFU binary: signaling and sotto-sfu in sx, Ana in
# sa creates the room (silence in, recording everyone), Ben in sb joins it with speech.
# Usage: room.sh OUTDIR SPEECH.wav [extra args for both ends]
set -uo pipefail
out=$1; speech=$2; shift 2
bin=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
mkdir -p "$out"; rm -rf "$out"/sig "$out"/a "$out"/b "$out"/rec
head -c 24 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9' > "$out/secret"
ip netns exec sx "$bin/sotto-signaling" --listen 10.77.0.1:7000 --data-dir "$out/sig" \
  --sfu-secret-file "$out/secret" >"$out/sig.log" 2>&1 &
sig=$!
sleep 0.5
srv=ws://10.77.0.1:7000/v1/ws
ip netns exec sx "$bin/sotto-sfu" --listen-udp 10.77.0.1:5000 --signaling $srv \
  --secret-file "$out/secret" --http 10.77.0.1:7100 >"$out/sfu.log" 2>&1 &
sfu=$!
sleep 1
"$bin/sotto" --data-dir "$out/a" id new --name Ana >/dev/null 2>&1
"$bin/sotto" --data-dir "$out/b" id new --name Ben >/dev/null 2>&1
ip netns exec sa "$bin/sotto" --data-dir "$out/a" room create --server $srv --input silence \
  --duration 20s --record "$out/rec" "$@" >"$out/ana.json" 2>"$out/ana.log" &
ana=$!
for _ in $(seq 50); do
  grep -q "sotto room join" "$out/ana.log" && break
  sleep 0.2
done
read -r room token < <(awk '/sotto room join/ {print $4, $5}' "$out/ana.log")
ip netns exec sb "$bin/sotto" --data-dir "$out/b" room join "$room" "$token" --server $srv \
  --input "$speech" --after-input 2s "$@" >"$out/ben.json" 2>"$out/ben.log"
wait $ana
ip netns exec sx curl -s http://10.77.0.1:7100/metrics > "$out/sfu-metrics.txt" || true
kill $sfu $sig 2>/dev/null; wait $sfu $sig 2>/dev/null
true
