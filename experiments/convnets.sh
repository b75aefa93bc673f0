#!/usr/bin/env bash
# Accuracy of the deep conv nets (issue: deep conv nets): ResNet-20 / VGG-16 trained from scratch,
# resumable: a checkpoint is written every epoch, and running the same command again continues
# from it (after a stop, a crash or Ctrl-C) instead of starting over.
# Recipe: SGD momentum 0.9 Nesterov, lr 0.1 cosine, wd 5e-4, batch 128, random crop (4 px zero
# padding) + horizontal flip, per-channel normalization; seed 1.
# Usage: experiments/convnets.sh MODEL EPOCHS [DATA]   e.g. resnet20 20 fashion-mnist
#        DATA: fashion-mnist (default), mnist, cifar10:DIR (CIFAR-10 binary files in DIR)
# Writes experiments/out/MODEL-DATASET.nnz, .ckpt.nnz, .log, and a JSON line to convnets.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?model (resnet20, resnet32, resnet56, vgg16)}
EPOCHS=${2:?epochs}
DATA=${3:-fashion-mnist}
make -s build/nnzip
mkdir -p experiments/out
tag=$MODEL-$(basename "${DATA#cifar10:}")
[ "${DATA%%:*}" = cifar10 ] && tag=$MODEL-cifar10
out=experiments/out/$tag.nnz ckpt=experiments/out/$tag.ckpt.nnz
resume=()
[ -f "$ckpt" ] && resume=(--resume "$ckpt") && echo "resuming from $ckpt" >&2
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}" >>experiments/out/convnets.jsonl
build/nnzip train --model "$MODEL" --data "$DATA" --epochs "$EPOCHS" --batch 128 --lr 0.1 \
  --momentum 0.9 --nesterov --wd 5e-4 --schedule cosine --augment crop4,flip --normalize on \
  --seed 1 --checkpoint "$ckpt" "${resume[@]}" --json -o "$out" \
  2>>experiments/out/$tag.log | tee -a experiments/out/convnets.jsonl
