#!/usr/bin/env bash
# Makes target/bench-venv: a Python with the call-quality scoring packages (pesq: the ITU-T
# P.862 reference code; pystoi; numpy; scipy). Idempotent; prints the Python's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv
if ! "$VENV/bin/python" -c 'import pesq, pystoi, numpy, scipy' 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet pesq pystoi numpy scipy >&2
fi
echo "$VENV/bin/python"
