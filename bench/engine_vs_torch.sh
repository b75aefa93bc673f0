#!/usr/bin/env bash
# Engine speed against PyTorch on this machine, in one run: same model, batch and threads.
# Usage: bench/engine_vs_torch.sh [BATCH] [THREADS]   (default 64 2); writes bench/out/engine.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-64}; T=${2:-2}
make -s build/bench/bench_engine
mkdir -p bench/out
out=bench/out/engine.jsonl; : >"$out"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, batch $B, threads $T"
printf '%-10s %14s %14s %7s %14s %14s %7s %10s %10s\n' model nnzip_train torch_train ratio nnzip_infer torch_infer ratio nnzip_MB torch_MB
for model in lenet300 lenet5; do
  a=$(build/bench/bench_engine "$model" "$B" "$T")
  b=$(/usr/bin/python3 bench/torch_engine.py "$model" "$B" "$T")
  echo "$a" >>"$out"; echo "$b" >>"$out"
  /usr/bin/python3 - "$a" "$b" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("%-10s %14.0f %14.0f %6.2fx %14.0f %14.0f %6.2fx %10.1f %10.1f" % (a["model"], a["train_images_per_s"], b["train_images_per_s"],
      a["train_images_per_s"] / b["train_images_per_s"], a["infer_images_per_s"], b["infer_images_per_s"],
      a["infer_images_per_s"] / b["infer_images_per_s"], a["max_rss_mb"], b["max_rss_mb"]))
PY
done
