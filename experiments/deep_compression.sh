#!/usr/bin/env bash
# Deep Compression on the LeNets (MNIST) with nnzip's defaults, from the baselines of
# experiments/baselines.sh (trained here if missing). Prints the per-layer tables and appends
# JSON lines to experiments/out/deep.jsonl; the sizes are the bytes of the .nnz files on disk.
# Usage: experiments/deep_compression.sh [MODELS...]   (default: lenet300 lenet5)
set -euo pipefail
cd "$(dirname "$0")/.."
models=${*:-lenet300 lenet5}
make -s build/nnzip
mkdir -p experiments/out
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >>experiments/out/deep.jsonl
for model in $models; do
  base=experiments/out/baseline-$model-mnist.nnz
  [ -s "$base" ] || build/nnzip train --model "$model" --data mnist --epochs 30 --seed 1 -q -o "$base"
  out=experiments/out/$model.dc.nnz
  start=$(date +%s)
  build/nnzip compress "$base" --data mnist --method deep --seed 1 -q --json -o "$out" >experiments/out/$model.dc.json
  secs=$(( $(date +%s) - start ))
  python3 - "$model" "$secs" experiments/out/$model.dc.json >>experiments/out/deep.jsonl <<'PY'
import json, sys
d = json.load(open(sys.argv[3])); d["model"] = sys.argv[1]; d["seconds"] = int(sys.argv[2])
print(json.dumps(d))
PY
  echo "== $model ($secs s)"
  build/nnzip info "$out" | sed -n '/compressed storage/,$p'
  build/nnzip eval "$out"
done
