#!/usr/bin/env bash
# Trained quantization: centroid initialization vs accuracy (the comparison of Han et al.'s
# Figure on linear / density / Forgy initialization, plus k-means++), on LeNet-300-100 / MNIST
# pruned with nnzip's defaults. For each init and width (bits for every fc layer): test error
# right after k-means (--quant-epochs 0) and after centroid fine-tuning (default epochs).
# Usage: experiments/quant_init.sh [BITS...]   (default: 2 3 4 5); threads: NNZIP_THREADS (1)
# Writes experiments/out/quant_init.jsonl (one JSON line per run) and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
bits=${*:-2 3 4 5}
T=${NNZIP_THREADS:-1}
make -s build/nnzip
mkdir -p experiments/out
base=experiments/out/baseline-lenet300-mnist.nnz
[ -s "$base" ] || build/nnzip train --model lenet300 --data mnist --epochs 30 --seed 1 -q -o "$base"
pruned=experiments/out/lenet300.pruned.nnz
[ -s "$pruned" ] || build/nnzip prune "$base" --data mnist --seed 1 -q -t "$T" -o "$pruned"
out=experiments/out/quant_init.jsonl
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads $T" >>"$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for b in $bits; do
  for init in linear density forgy kmeans++; do
    for ep in 0 3; do
      r=$(build/nnzip quantize "$pruned" --data mnist --bits "fc=$b" --init "$init" --quant-epochs "$ep" \
            --seed 1 -t "$T" -q --json -o "$tmp/q.nnz")
      e=$(build/nnzip eval "$tmp/q.nnz" --data mnist -t "$T" --json)
      python3 - "$b" "$init" "$ep" "$r" "$e" >>"$out" <<'PY'
import json, sys
b, init, ep, r, e = sys.argv[1:6]
print(json.dumps({"bits": int(b), "init": init, "quant_epochs": int(ep),
                  "test_error_pct": json.loads(e)["test_error_pct"], "quantize": json.loads(r)}))
PY
    done
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#"): rows = {}; continue
    d = json.loads(line); rows[(d["bits"], d["init"], d["quant_epochs"])] = d["test_error_pct"]
inits = ["linear", "density", "forgy", "kmeans++"]
print("test error % (after k-means / after fine-tuning)")
print("%-5s" % "bits" + "".join("%18s" % i for i in inits))
for b in sorted({k[0] for k in rows}):
    print("%-5d" % b + "".join("%18s" % ("%.2f / %.2f" % (float(rows.get((b, i, 0), "nan")), float(rows.get((b, i, 3), "nan")))) for i in inits))
PY
