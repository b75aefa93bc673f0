#!/usr/bin/env bash
# CIFAR-size convnets, nnzip against PyTorch on this machine in one run: resnet20 and vgg16
# (optionally resnet32) on 3x32x32, same batch and threads, training (forward + backward + SGD)
# and inference throughput. The two sides build the same graph (bias on every conv, BN momentum
# 0.1, eps 1e-5); the script checks that their parameter and MAC counts agree.
# Usage: bench/convnets_vs_torch.sh [BATCH] [THREADS]   (default 128 2)
#   CONVNETS_MODELS="resnet20 resnet32 vgg16" picks the models (default resnet20 vgg16; resnet32
#   adds ~1-2 minutes). CONVNETS_ROUNDS (default 3): rounds per model, alternating which side
#   runs first; the medians are compared and each round's ratios printed.
#   Step counts are sized for < 5 minutes a round at batch 128 on 2 cores (they scale as 128/BATCH).
#   OPENBLAS_CORETYPE is reported, never set: export it yourself to compare kernels (e.g. SkylakeX).
# Appends one JSON line per side and model to bench/out/convnets.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-128}; T=${2:-2}
MODELS=${CONVNETS_MODELS:-resnet20 vgg16}
ROUNDS=${CONVNETS_ROUNDS:-3}
SHAPE=3x32x32
PY=/usr/bin/python3
make -s build/bench/bench_engine
mkdir -p bench/out
out=bench/out/convnets.jsonl

# timed training steps and inference images per model at batch 128 (+ ~10% warm-up each)
steps_for() { case $1 in resnet20) echo 10;; resnet32) echo 6;; vgg16) echo 5;; *) echo 8;; esac; }
infer_for() { case $1 in resnet20) echo 1024;; resnet32) echo 768;; vgg16) echo 384;; *) echo 512;; esac; }

date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
coretype=${OPENBLAS_CORETYPE:-auto}
onednn=$(DNNL_VERBOSE=1 "$PY" -c "import torch; torch.set_num_threads(1); torch.nn.functional.conv2d(torch.zeros(8, 16, 32, 32), torch.zeros(16, 16, 3, 3))" 2>/dev/null |
         grep -m1 ',isa:' | sed 's/.*isa://' || true)
torchv=$("$PY" -c "import torch; print(torch.__version__)")
echo "# $date_utc  $cpu, $(nproc) cores, batch $B, threads $T, input $SHAPE"
echo "# OPENBLAS_CORETYPE=$coretype (nnzip GEMMs; torch's Linear layers); torch $torchv convs: oneDNN isa ${onednn:-unknown}"
printf '%-9s %12s %12s %7s %12s %12s %7s %9s %9s %6s %5s\n' model nnzip_train torch_train ratio nnzip_infer torch_infer ratio nnzip_MB torch_MB wall_s arch
start=$SECONDS
for model in $MODELS; do
  s=$(( ($(steps_for "$model") * 128 + B - 1) / B )); [ "$s" -ge 3 ] || s=3
  n=$(infer_for "$model"); [ "$n" -ge "$B" ] || n=$B
  t0=$SECONDS
  # rounds alternate which side goes first, so a slow spell of the machine (other tenants,
  # clock changes) falls on both sides instead of deciding the ratio
  runs_a=(); runs_b=()
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
      runs_a+=("$(build/bench/bench_engine --shape "$SHAPE" "$model" "$B" "$T" "$s" "$n")")
      runs_b+=("$("$PY" bench/torch_engine.py --shape "$SHAPE" "$model" "$B" "$T" "$s" "$n")")
    else
      runs_b+=("$("$PY" bench/torch_engine.py --shape "$SHAPE" "$model" "$B" "$T" "$s" "$n")")
      runs_a+=("$(build/bench/bench_engine --shape "$SHAPE" "$model" "$B" "$T" "$s" "$n")")
    fi
  done
  wall=$((SECONDS - t0))
  "$PY" - "$date_utc" "$cpu" "$coretype" "$wall" "$out" "$ROUNDS" "${runs_a[@]}" "${runs_b[@]}" <<'PY'
import json, statistics, sys
date, cpu, coretype, wall, out, R = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
A = [json.loads(x) for x in sys.argv[7:7 + R]]
B = [json.loads(x) for x in sys.argv[7 + R:7 + 2 * R]]
med = lambda rs, k: statistics.median(r[k] for r in rs)
a, b = dict(A[0]), dict(B[0])
for k in ("train_images_per_s", "infer_images_per_s"):
    a[k], b[k] = med(A, k), med(B, k)
tr, inf = a["train_images_per_s"] / b["train_images_per_s"], a["infer_images_per_s"] / b["infer_images_per_s"]
rtr = [x["train_images_per_s"] / y["train_images_per_s"] for x, y in zip(A, B)]
rinf = [x["infer_images_per_s"] / y["infer_images_per_s"] for x, y in zip(A, B)]
same = all((x["params"], x["macs_per_image"]) == (b["params"], b["macs_per_image"]) for x in A)
print("%-9s %12.1f %12.1f %6.2fx %12.1f %12.1f %6.2fx %9.1f %9.1f %6d %5s" % (a["model"], a["train_images_per_s"],
      b["train_images_per_s"], tr, a["infer_images_per_s"], b["infer_images_per_s"], inf,
      max(x["max_rss_mb"] for x in A), max(y["max_rss_mb"] for y in B), wall, "same" if same else "DIFF"))
if R > 1:
    print("          rounds: train %s; infer %s" % (" ".join("%.2fx" % x for x in rtr), " ".join("%.2fx" % x for x in rinf)))
if not same:
    print("  WARNING: architectures differ: nnzip %d params %d MACs, torch %d params %d MACs" %
          (a["params"], a["macs_per_image"], b["params"], b["macs_per_image"]))
with open(out, "a") as f:
    for r, rs in ((a, A), (b, B)):
        r = dict(r, bench="convnets", date=date, cpu=cpu, openblas_coretype=coretype, rounds=R,
                 train_images_per_s_rounds=[x["train_images_per_s"] for x in rs],
                 infer_images_per_s_rounds=[x["infer_images_per_s"] for x in rs])
        r["train_ratio_nnzip_over_torch"], r["infer_ratio_nnzip_over_torch"] = round(tr, 3), round(inf, 3)
        f.write(json.dumps(r) + "\n")
PY
done
echo "# img/s, median of $ROUNDS rounds per side; ratio = nnzip / pytorch of the medians (> 1: nnzip faster); arch: same params and MACs per image on both sides; $((SECONDS - start)) s in all; appended to $out"
