#!/usr/bin/env bash
# Slim, then Deep Compression (issue: structured slimming, "slim then deep on LeNet-5"): one
# `nnzip compress --method slim,deep` call; the size is the bytes of the .nnz on disk.
# Usage: experiments/slim_deep.sh BASELINE.nnz DATA TAG [nnzip compress options...]
# Appends a JSON line to experiments/out/slim_deep.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?baseline .nnz}; data=${2:?data set}; tag=${3:?tag}; shift 3
make -s build/nnzip
mkdir -p experiments/out
out=experiments/out/$(basename "$base" .nnz).sd-$tag.nnz
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $base $data $*" >>experiments/out/slim_deep.jsonl
start=$(date +%s)
build/nnzip compress "$base" --data "$data" --method slim,deep --seed 1 --json -q "$@" -o "$out" >"${out%.nnz}.json"
secs=$(( $(date +%s) - start ))
/usr/bin/python3 - "$base" "$secs" "${out%.nnz}.json" "$tag" "$(stat -c %s "$base")" "$(stat -c %s "$out")" >>experiments/out/slim_deep.jsonl <<'PY'
import json, sys
d = json.load(open(sys.argv[3]))
print(json.dumps({"model": sys.argv[1], "tag": sys.argv[4], "seconds": int(sys.argv[2]),
                  "baseline_file_bytes": int(sys.argv[5]), "file_bytes": int(sys.argv[6]),
                  "file_ratio": int(sys.argv[5]) / int(sys.argv[6]), "result": d}))
PY
echo "== $out ($secs s)"
build/nnzip info "$out" | sed -n '/compressed storage/,$p'
build/nnzip eval "$out" --data "$data"
