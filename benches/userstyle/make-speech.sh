#!/usr/bin/env bash
# Held-out speech for the user-style calls (needs Debian's espeak-ng and sox): two
# espeak-ng voices, a female en-gb+f2 and a low male en-us+m3, saying sentences that are
# not in benches/data; 48 kHz mono 16-bit, 0.5 s of silence at each end, -3 dBFS, no
# dither (-D: the same bytes every run). Usage: make-speech.sh OUTDIR (writes f2.wav, m3.wav).
set -euo pipefail
out=${1:?usage: make-speech.sh OUTDIR}
mkdir -p "$out"
make() {
  local name=$1 voice=$2 speed=$3 text=$4
  espeak-ng -v "$voice" -s "$speed" -w "$out/raw-$name.wav" "$text"
  sox -D "$out/raw-$name.wav" -r 48000 -c 1 -b 16 "$out/$name.wav" pad 0.5 0.5 norm -3 rate -v 48000
  rm -f "$out/raw-$name.wav"
}
make f2 en-gb+f2 155 "Our train was delayed by twenty minutes, so I missed the start of the talk. Could you send me your notes tonight? I will read them before breakfast."
make m3 en-us+m3 150 "Heavy rain is expected across the north this weekend. Drivers should allow extra time, and ferries may be cancelled at short notice."
