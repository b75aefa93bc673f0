#!/usr/bin/env bash
# Peak memory (max RSS) and throughput of a real training run, nnzip vs PyTorch, same model, data,
# batch 64, threads and epochs. Usage: bench/train_rss.sh [MODEL] [LIMIT] [EPOCHS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-lenet5}; limit=${2:-60000}; epochs=${3:-1}; T=${4:-2}
data=${NNZIP_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nnzip/data}/mnist
make -s build/nnzip
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $model, $limit images x $epochs epochs, batch 64, $T threads"
/usr/bin/time -f "%M %e" -o /tmp/nnzip-rss.$$ build/nnzip train --model "$model" --data "$data" --epochs "$epochs" --limit "$limit" --threads "$T" -q -o /tmp/nnzip-rss.$$.nnz >/dev/null
read -r kb secs </tmp/nnzip-rss.$$
rm -f /tmp/nnzip-rss.$$ /tmp/nnzip-rss.$$.nnz
echo "nnzip:   max RSS $((kb / 1024)) MB, $secs s wall (includes loading data and evaluating the test set each epoch)"
/usr/bin/time -f "%M %e" -o /tmp/torch-rss.$$ /usr/bin/python3 bench/torch_train.py "$model" "$data" "$epochs" "$limit" "$T" >/tmp/torch-rss.$$.json
read -r kb secs </tmp/torch-rss.$$
echo "pytorch: max RSS $((kb / 1024)) MB, $secs s wall; $(cat /tmp/torch-rss.$$.json)"
rm -f /tmp/torch-rss.$$ /tmp/torch-rss.$$.json
