#!/usr/bin/env bash
# Installs what Sotto needs to build and test on Debian 12 (or a close relative):
# the C toolchain and -dev packages the workspace links against, a Rust toolchain if
# none is on PATH, and what the browser interop test drives (Debian's Chromium, iproute2
# for its network namespace, Node.js and the npm packages in examples/tests/browser).
# Safe to run again: it installs only what is missing.
# With CI=1 (as .ci/run sets) it always refreshes the package lists first.
set -euo pipefail

packages=(
  build-essential pkg-config cmake   # C builds: bundled SQLite now, libopus later
  libasound2-dev                     # ALSA headers for cpal (audio devices)
  libvpx-dev                         # VP8 for video calls (vpx/, through env-libvpx-sys)
  nasm                               # OpenH264's assembly (h264/; without it, slower C)
  ca-certificates curl git
  chromium iproute2                  # browser interop test (examples/tests/browser_interop.rs)
  nftables                           # engine/tests/cli_netns.rs: blocked paths between namespaces
  python3 python3-venv python3-dev   # call-quality scoring: PESQ (ITU P.862 code), STOI
  fonts-dejavu-core                  # the call-quality bench's PNG charts (plotters, ab_glyph)
)
# Node.js 20 or newer drives Chromium (playwright-core). Debian 12's own nodejs is 18, so
# it is installed only when there is no node at all (our machines come with 20).
if ! command -v node >/dev/null 2>&1; then packages+=(nodejs npm); fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${CI:-}" = "1" ] || [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
cargo --version

# The browser interop test's npm packages, exactly as package-lock.json pins them (again
# when the lock file is newer than what npm last installed).
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/examples/tests/browser"
installed_lock="$browser_dir/node_modules/.package-lock.json"
if [ ! -f "$installed_lock" ] || [ "$browser_dir/package-lock.json" -nt "$installed_lock" ]; then
  (cd "$browser_dir" && npm ci --no-audit --no-fund)
fi
node --version

# The call-quality bench's scoring Python (pesq, pystoi, numpy, scipy) in target/bench-venv.
bash "$(cd "$(dirname "$0")/.." && pwd)/benches/setup-scoring.sh" >/dev/null
