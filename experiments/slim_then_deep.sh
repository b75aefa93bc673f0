#!/usr/bin/env bash
# Slim, rebalance, then Deep Compression, as two calls so each stage keeps its own options:
#   1. nnzip slim BASELINE --lambda LAMBDA SLIM_OPTS           -> experiments/out/...sd2-TAG.slim.nnz
#   2. nnzip compress SLIMMED --method deep --rebalance DEEP_OPTS -> experiments/out/...sd2-TAG.nnz
# The ratio is against the float32 parameters of BASELINE (what the paper counts), the size is the
# .nnz on disk. Usage:
#   experiments/slim_then_deep.sh BASELINE.nnz DATA TAG LAMBDA "SLIM_OPTS" "DEEP_OPTS"
# e.g. (LeNet-5, fc layers slimmed, 80x at 0.73% in docs/results.md):
#   experiments/slim_then_deep.sh experiments/out/baseline-lenet5-mnist.nnz mnist fcR3 \
#     conv=0,fc=5e-2 "-t 1 --val 5000" \
#     "-t 1 --prune-lr 0.01 --sparsity conv1=0.34,conv2=0.85,fc1=0.8,fc2=0.6"
# Appends a JSON line to experiments/out/slim_deep.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?baseline .nnz}; data=${2:?data set}; tag=${3:?tag}; lambda=${4:?lambda}
slim_opts=${5:-}; deep_opts=${6:-}
make -s build/nnzip
mkdir -p experiments/out
stem=experiments/out/$(basename "$base" .nnz).sd2-$tag
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $base $data lambda $lambda slim: $slim_opts deep: $deep_opts" >>experiments/out/slim_deep.jsonl
start=$(date +%s)
# shellcheck disable=SC2086 # the option strings are word lists
build/nnzip slim "$base" --data "$data" --lambda "$lambda" --seed 1 --json -q $slim_opts \
  -o "$stem.slim.nnz" >"$stem.slim.json"
# shellcheck disable=SC2086
build/nnzip compress "$stem.slim.nnz" --data "$data" --method deep --rebalance --seed 1 --json -q \
  $deep_opts -o "$stem.nnz" >"$stem.json"
secs=$(( $(date +%s) - start ))
/usr/bin/python3 - "$base" "$tag" "$secs" "$stem" "$(stat -c %s "$stem.nnz")" >>experiments/out/slim_deep.jsonl <<'PY'
import json, sys
base, tag, secs, stem, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s, d = json.load(open(stem + ".slim.json")), json.load(open(stem + ".json"))
f32 = 4 * s["params_before"]
print(json.dumps({"model": base, "tag": tag, "seconds": secs, "float32_bytes": f32,
                  "file_bytes": size, "ratio": f32 / size,
                  "test_error_baseline_pct": s["test_error_before_pct"],
                  "test_error_slim_pct": s["test_error_pct"],
                  "test_error_pct": d["test_error_pct"], "slim": s, "deep": d}))
PY
tail -1 experiments/out/slim_deep.jsonl | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print("== %s: %d B on disk, %.1fx, test error %.2f%% -> %.2f%% (slim) -> %.2f%% (%d s)" % (d["tag"], d["file_bytes"], d["ratio"], d["test_error_baseline_pct"], d["test_error_slim_pct"], d["test_error_pct"], d["seconds"]))'
