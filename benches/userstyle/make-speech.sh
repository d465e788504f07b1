#!/usr/bin/env bash
# Held-out speech for the user-style calls: the first two files of the report speech set
# (benches/speech/make-report-set.sh), a female en-gb+f2 and a low male en-us+m3, as f2.wav
# and m3.wav. Usage: make-speech.sh OUTDIR
set -euo pipefail
out=${1:?usage: make-speech.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
set_dir=$(mktemp -d)
trap 'rm -rf "$set_dir"' EXIT
bash "$here/../speech/make-report-set.sh" "$set_dir"
mkdir -p "$out"
cp "$set_dir/r1.wav" "$out/f2.wav"
cp "$set_dir/r2.wav" "$out/m3.wav"
