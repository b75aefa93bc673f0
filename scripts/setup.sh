#!/usr/bin/env bash
# One command from a fresh Debian machine to a working nnzip: installs dependencies, fetches
# MNIST and Fashion-MNIST into the data dir ($NNZIP_DATA_DIR, default ~/.cache/nnzip/data),
# builds, then trains LeNet-300-100 briefly on MNIST and prints its test error.
# Options: --data-dir DIR, --no-demo.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=1
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) export NNZIP_DATA_DIR="$2"; shift 2 ;;
    --no-demo) demo=0; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
scripts/install_deps.sh
scripts/fetch_data.sh
make -j"$(nproc)"
if [ "$demo" = 1 ]; then
  out=${NNZIP_WORK:-build}/demo-lenet300.nnz
  echo "demo: training LeNet-300-100 on MNIST for 2 epochs -> $out"
  build/nnzip train --model lenet300 --data mnist --epochs 2 --seed 1 -o "$out"
  build/nnzip eval "$out" --data mnist
  build/nnzip info "$out"
fi
