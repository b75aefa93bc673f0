#!/usr/bin/env bash
# Baseline accuracy of the engine (issue: the engine): LeNet-300-100 and LeNet-5 on MNIST with
# the default recipe (SGD, momentum 0.9, lr 0.1 cosine, wd 5e-4, batch 64), seed 1.
# Writes experiments/out/baseline-*.nnz and a JSON line per run to experiments/out/baselines.jsonl.
# Usage: experiments/baselines.sh [EPOCHS]  (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-30}
make -s build/nnzip
mkdir -p experiments/out
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >>experiments/out/baselines.jsonl
for spec in lenet300:mnist lenet5:mnist lenet500:mnist lenet5:fashion-mnist; do
  model=${spec%%:*}; data=${spec#*:}
  out=experiments/out/baseline-$model-$data.nnz
  build/nnzip train --model "$model" --data "$data" --epochs "$EPOCHS" --seed 1 --json -o "$out" \
    2>experiments/out/baseline-$model-$data.log | tee -a experiments/out/baselines.jsonl
done
