#!/usr/bin/env bash
# LeNet-5's fc-only slimming against its baseline over several seeds: one baseline's error moves
# by ~0.1 point with the seed and the thread count, which is the size of the effect measured.
# For each seed S: the baseline recipe of experiments/baselines.sh (30 epochs, lr 0.05 cosine,
# batch 64, wd 5e-4; the seed-1 baseline is baseline-lenet5-mnist.nnz, reused when present),
# then `nnzip slim` of the fc layers (lambda conv=0,fc=L, proximal, no fine-tune) with the
# same seed. Resumable: a finished baseline or slim output is not run again.
# Usage: [THREADS=N] experiments/lenet5_seeds.sh "SEEDS" [LAMBDA] [extra nnzip slim options]
#   e.g. THREADS=1 experiments/lenet5_seeds.sh "2 3" 4.5e-2 --wd 5e-4   (THREADS: default 2)
# Appends one JSON line per baseline and per slim to experiments/out/lenet5_seeds.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=$1; lam=${2:-4.5e-2}; shift 2 || shift $#
T=${THREADS:-2}
make -s build/nnzip
mkdir -p experiments/out
log=experiments/out/lenet5_seeds.jsonl
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; seeds $seeds lambda $lam threads $T $*" >>"$log"
for s in $seeds; do
  base=experiments/out/baseline-lenet5-mnist.nnz
  [ "$s" = 1 ] || base=experiments/out/baseline-lenet5-mnist-seed$s.nnz
  if [ ! -f "$base" ]; then
    ckpt=${base%.nnz}.ckpt.nnz
    if [ -f "$ckpt" ]; then # an interrupted run continues where its last epoch ended
      r=$(build/nnzip train --resume "$ckpt" --epochs 30 --json -t "$T" -o "$base" \
        2>>"${base%.nnz}.log")
    else
      r=$(build/nnzip train --model lenet5 --data mnist --epochs 30 --seed "$s" --json -t "$T" \
        -o "$base" 2>"${base%.nnz}.log")
    fi
    echo "{\"seed\": $s, \"baseline\": $r}" | tee -a "$log"
  fi
  tag=$(echo "$*" | tr -d ' -' | tr '=' '_')
  out=experiments/out/slim-lenet5-seed$s-fc$lam${tag:+-$tag}.nnz
  if [ ! -f "$out" ]; then
    r=$(build/nnzip slim "$base" --data mnist --lambda "conv=0,fc=$lam" --method proximal \
      --finetune-epochs 0 --seed "$s" -t "$T" --json -q -o "$out" "$@")
    echo "{\"seed\": $s, \"base\": \"$(basename "$base")\", \"lambda\": \"conv=0,fc=$lam\", \"extra\": \"$*\", \"result\": $r}" | tee -a "$log"
  fi
done
