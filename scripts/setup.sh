#!/usr/bin/env bash
# Installs the Debian 12 packages kvbench needs to build, test and plot.
# Idempotent: prints nothing and exits 0 when everything is already there.
set -euo pipefail

packages=(
  gcc pkg-config meson ninja-build        # toolchain
  libopenblas-dev                         # sgemm for prefill
  libcmocka-dev                           # unit tests
  python3-numpy                           # the independent reference (tests/reference)
  libsqlite3-dev libcsv-dev libinih-dev libcjson-dev  # results database, CSV and JSONL data, experiment files
  libpcre2-dev                            # byte-level BPE pre-tokenizer regexes (Unicode \p{L}, \p{N})
  libutf8proc-dev                         # Unicode NFC before pre-tokenizing (Qwen's tokenizer.json)
  libxxhash-dev                           # model identity: XXH3-128 of the whole file
  gnuplot-nox sqlite3                     # figures; the results database's command line
  wamerican                               # RULER tasks: the word list standing in for wonderwords (datasets/ruler.c)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "setup: need root to run: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
