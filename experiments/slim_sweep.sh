#!/usr/bin/env bash
# Structured slimming of a baseline: a sweep over the L1 strength (and proximal vs subgradient).
# Usage: experiments/slim_sweep.sh BASELINE.nnz DATA "LAMBDAS" [METHODS] [extra nnzip slim options]
# e.g.   experiments/slim_sweep.sh experiments/out/baseline-lenet500-mnist.nnz mnist "1e-3 3e-3"
# Appends one JSON line per run to experiments/out/slim.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; data=$2; lambdas=$3; methods=${4:-proximal}; shift 4 || shift $#
make -s build/nnzip
mkdir -p experiments/out
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $base $data $*" >>experiments/out/slim.jsonl
for meth in $methods; do
  for lam in $lambdas; do
    out=experiments/out/slim-$(basename "$base" .nnz)-$meth-$lam.nnz
    r=$(build/nnzip slim "$base" --data "$data" --lambda "$lam" --method "$meth" --seed 1 --json -q -o "$out" "$@")
    echo "{\"base\": \"$(basename "$base")\", \"lambda\": \"$lam\", \"method\": \"$meth\", \"extra\": \"$*\", \"result\": $r}" | tee -a experiments/out/slim.jsonl
  done
done
