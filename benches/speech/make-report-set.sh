#!/usr/bin/env bash
# The report speech set: eight voices the tuning never used (the tuning set is
# benches/data/, three files), four female and four male espeak-ng variants over six
# accents, each saying sentences of its own, so that a figure reported on it does not fit
# the speech it was tuned on. Debian's espeak-ng and sox; 48 kHz mono 16-bit, 0.5 s of
# silence at each end, -3 dBFS, no dither (-D: the same bytes every run for a given
# espeak-ng and sox). (mbrola's voices would add real diphone recordings; Debian ships them
# in contrib/non-free, which a fresh machine does not have.)
# Usage: make-report-set.sh OUTDIR   (writes r1.wav ... r8.wav)
set -euo pipefail
out=${1:?usage: make-report-set.sh OUTDIR}
mkdir -p "$out"
make() {
  local name=$1 voice=$2 speed=$3 text=$4
  espeak-ng -v "$voice" -s "$speed" -w "$out/raw-$name.wav" "$text"
  sox -D "$out/raw-$name.wav" -r 48000 -c 1 -b 16 "$out/$name.wav" pad 0.5 0.5 norm -3 rate -v 48000
  rm -f "$out/raw-$name.wav"
}
make r1 en-gb+f2 155 "Our train was delayed by twenty minutes, so I missed the start of the talk. Could you send me your notes tonight? I will read them before breakfast."
make r2 en-us+m3 150 "Heavy rain is expected across the north this weekend. Drivers should allow extra time, and ferries may be cancelled at short notice."
make r3 en-us+f4 165 "The bakery on the corner sells bread until six. If they run out, try the market by the bridge; it stays open late on Fridays."
make r4 en-gb-scotland+m1 145 "Bring a warm jacket and sturdy boots. The path along the loch is muddy after the storms, and the wind picks up in the afternoon."
make r5 en-029+f1 160 "My sister starts her new job on Monday. She is nervous, but her manager seems kind, and the office is only ten minutes from home."
make r6 en-gb-x-rp+m7 150 "Please remember to water the tomatoes while we are away. The hose is behind the shed, and the key is under the blue pot."
make r7 en-us-nyc+f5 170 "We counted forty two birds at the lake this morning: ducks, geese, two herons and a kingfisher that nobody managed to photograph."
make r8 en-gb-x-gbcwmd+m2 155 "The match was postponed because of the frost. Tickets stay valid for the new date, or you can ask for a refund at the box office."
