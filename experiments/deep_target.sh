#!/usr/bin/env bash
# Deep Compression with the size chosen up front: `nnzip compress --target-ratio R` picks each
# layer's sparsity and bits from sensitivity curves, then prunes, quantizes and encodes.
# Usage: experiments/deep_target.sh MODEL "RATIOS"   e.g. experiments/deep_target.sh lenet300 "52 56"
# Baselines come from experiments/baselines.sh (trained here if missing). Appends one JSON line
# per ratio to experiments/out/deep_target.jsonl; sizes are the bytes of the .nnz on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; ratios=$2
make -s build/nnzip
mkdir -p experiments/out
base=experiments/out/baseline-$model-mnist.nnz
[ -s "$base" ] || build/nnzip train --model "$model" --data mnist --epochs 30 --seed 1 -q -o "$base"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >>experiments/out/deep_target.jsonl
for R in $ratios; do
  out=experiments/out/$model.dc-r$R.nnz
  start=$(date +%s)
  build/nnzip compress "$base" --data mnist --method deep --target-ratio "$R" --seed 1 -q --json -o "$out" >"$out.json"
  secs=$(( $(date +%s) - start ))
  python3 - "$model" "$R" "$secs" "$out.json" >>experiments/out/deep_target.jsonl <<'PY'
import json, sys
d = json.load(open(sys.argv[4])); d["model"] = sys.argv[1]; d["seconds"] = int(sys.argv[3])
print(json.dumps(d))
PY
  echo "== $model --target-ratio $R ($secs s): $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2fx, %d bytes, test error %.2f%%" % (d["ratio"], d["file_bytes"], d["test_error_pct"]))' "$out.json")"
  build/nnzip info "$out" | sed -n '/compressed storage/,$p'
done
