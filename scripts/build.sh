#!/usr/bin/env bash
# Configures (once) and builds kvbench into build/ (or $1; further
# arguments go to `meson setup`). Quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
  if ! out=$(meson setup "$dir" -Dwerror=true "$@" 2>&1); then echo "$out"; exit 1; fi
fi
if ! out=$(ninja -C "$dir" 2>&1); then echo "$out"; exit 1; fi
