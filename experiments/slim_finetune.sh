#!/usr/bin/env bash
# More fine-tuning of a slimmed model: `nnzip slim` with lambda 0 and no penalized epochs, so
# only the fine-tune runs and the removed kernels and neurons stay removed.
# Usage: experiments/slim_finetune.sh SLIM.nnz DATA EPOCHS [extra nnzip slim options]
# e.g.   experiments/slim_finetune.sh experiments/out/slim-vgg16-fashion-mnist-proximal-1e-2.nnz \
#          fashion-mnist 4 -b 128 -t 2 --augment crop4,flip
# Writes SLIM-ftEPOCHS[-TAG].nnz next to it (TAG: an environment variable, to keep variants apart);
# appends one JSON line to experiments/out/slim.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: $0 SLIM.nnz DATA EPOCHS [nnzip slim options]" >&2; exit 2; }
slim=$1; data=$2; epochs=$3; shift 3
make -s build/nnzip
mkdir -p experiments/out
out=${slim%.nnz}-ft$epochs${TAG:+-$TAG}.nnz
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; fine-tune $slim $data $epochs $*" >>experiments/out/slim.jsonl
r=$(build/nnzip slim "$slim" --data "$data" --lambda 0 --epochs 0 --finetune-epochs "$epochs" --seed 1 --json -q -o "$out" "$@")
echo "{\"base\": \"$(basename "$slim")\", \"lambda\": \"0\", \"method\": \"finetune\", \"extra\": \"$*\", \"result\": $r}" | tee -a experiments/out/slim.jsonl
