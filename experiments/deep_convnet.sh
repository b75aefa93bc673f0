#!/usr/bin/env bash
# Deep Compression of a trained conv net (issue: Deep Compression, "ResNet-20 on Fashion-MNIST
# through the same pipeline"): prune with retraining, quantize with centroid fine-tuning, encode.
# The baseline comes from experiments/convnets.sh (e.g. resnet20 20 fashion-mnist).
# Usage: experiments/deep_convnet.sh BASELINE.nnz DATA [nnzip compress options...]
# Default settings (a short schedule that fits a 2-core machine): 70% of every conv/fc layer's
# weights removed in 2 prune+retrain rounds of 2 epochs, 6-bit conv / 5-bit fc codebooks, one
# centroid fine-tuning epoch. Appends a JSON line to experiments/out/deep.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?baseline .nnz}; data=${2:?data set}; shift 2
make -s build/nnzip
mkdir -p experiments/out
out=experiments/out/$(basename "$base" .nnz).dc.nnz
opts=(--sparsity 0.7 --bits conv=6,fc=5 --rounds 2 --prune-epochs 2 --quant-epochs 1 "$@")
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $base $data ${opts[*]}" >>experiments/out/deep.jsonl
start=$(date +%s)
build/nnzip eval "$base" --data "$data"
build/nnzip compress "$base" --data "$data" --method deep --seed 1 --json "${opts[@]}" -o "$out" \
  >"${out%.nnz}.json" 2>"${out%.nnz}.log"
secs=$(( $(date +%s) - start ))
/usr/bin/python3 - "$base" "$secs" "${out%.nnz}.json" "$(stat -c %s "$base")" >>experiments/out/deep.jsonl <<'PY'
import json, sys
d = json.load(open(sys.argv[3])); d["model"] = sys.argv[1]; d["seconds"] = int(sys.argv[2])
d["baseline_file_bytes"] = int(sys.argv[4])
print(json.dumps(d))
PY
echo "== $out ($secs s)"
build/nnzip info "$out" | sed -n '/compressed storage/,$p'
build/nnzip eval "$out" --data "$data"
