#!/usr/bin/env bash
# Regenerates the reference speech WAVs used by the call tests and the call-quality bench:
# espeak-ng (Debian package espeak-ng) speaks a sentence, sox (package sox) resamples it to
# 48 kHz mono 16-bit, adds 0.5 s of silence at each end (room for delay alignment) and
# normalises to -3 dBFS. Output is deterministic for a given espeak-ng and sox version.
set -euo pipefail
cd "$(dirname "$0")"

make() {
  local name=$1 voice=$2 speed=$3 text=$4
  espeak-ng -v "$voice" -s "$speed" -w "/tmp/$name.raw.wav" "$text"
  sox "/tmp/$name.raw.wav" -r 48000 -c 1 -b 16 "$name.wav" \
    pad 0.5 0.5 norm -3 rate -v 48000
  rm -f "/tmp/$name.raw.wav"
  printf '%s: %s s\n' "$name.wav" "$(soxi -D "$name.wav")"
}

make speech-en-us-1 en-us 160 \
  "The quick brown fox jumps over the lazy dog. Sotto carries your voice across the network, and only the people in the call can hear it."
make speech-en-gb-2 en-gb 150 \
  "Please call me back when you get this message. The meeting moved to Thursday at half past three, in the small room on the second floor."
make speech-en-us-3 en-us+f3 170 \
  "Seven silver spoons sat beside a shallow bowl of soup. Numbers help too: one, two, three, four, five, six, seven, eight, nine, ten."
