#!/usr/bin/env bash
# End-to-end tests of the nnzip CLI: help, usage errors, bad files, atomic outputs, and a real
# 1-epoch LeNet-300-100 training on MNIST (< 4% test error). Needs the MNIST data
# (scripts/fetch_data.sh). Usage: tests/cli_test.sh [path/to/nnzip]
set -u
NNZ=${1:-build/nnzip}
T=$(mktemp -d /tmp/nnzip-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*" >&2; }
# expect CODE DESCRIPTION -- command...: checks the exit code; stderr kept in $T/err
expect() {
  local want=$1 what=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  if [ "$got" = "$want" ]; then ok; else bad "$what: exit $got, want $want ($(head -c 200 "$T/err"))"; fi
}
# err_names TEXT DESCRIPTION: stderr is one line and mentions TEXT
err_names() {
  if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -qF -- "$1" "$T/err"; then ok; else bad "$2: stderr '$(head -c 300 "$T/err")' should be one line naming '$1'"; fi
}

# ---- help and usage
expect 0 "nnzip --help" -- "$NNZ" --help
for c in train eval info prune quantize encode compress slim sensitivity; do expect 0 "nnzip $c --help" -- "$NNZ" $c --help; grep -q "usage: nnzip $c" "$T/out" && ok || bad "$c --help prints usage"; done
expect 2 "unknown command" -- "$NNZ" frobnicate; err_names frobnicate "unknown command"
expect 2 "unknown flag" -- "$NNZ" train --model lenet300 --bogus -o "$T/x.nnz"; err_names -- "--bogus" "unknown flag"
expect 2 "bad integer" -- "$NNZ" train --model lenet300 --epochs many -o "$T/x.nnz"; err_names many "bad integer"
expect 2 "unknown model" -- "$NNZ" train --model resnet999 --data mnist --epochs 1 -o "$T/x.nnz"; err_names resnet999 "unknown model"
expect 2 "no args" -- "$NNZ"
expect 2 "bad --augment" -- "$NNZ" train --model lenet300 --augment crop4,spin -o "$T/x.nnz"; err_names spin "bad --augment"
expect 2 "multistep without milestones" -- "$NNZ" train --model lenet300 --schedule multistep -o "$T/x.nnz"; err_names milestones "multistep without milestones"
expect 1 "missing --resume file" -- "$NNZ" train --resume "$T/nope.ckpt.nnz" -o "$T/x.nnz"; err_names "$T/nope.ckpt.nnz" "missing --resume file"
# sensitivity and --target-ratio: bad flags and values are usage errors before any file is read
expect 2 "sensitivity unknown flag" -- "$NNZ" sensitivity "$T/nope.nnz" --bogus; err_names -- "--bogus" "sensitivity unknown flag"
expect 2 "sensitivity no model" -- "$NNZ" sensitivity; err_names "one model file" "sensitivity no model"
expect 2 "sensitivity decreasing sparsities" -- "$NNZ" sensitivity "$T/nope.nnz" --sparsities 10,5; err_names "increase" "decreasing sparsities"
expect 2 "sensitivity sparsity 100" -- "$NNZ" sensitivity "$T/nope.nnz" --sparsities 0,100; err_names "'100'" "sparsity 100"
expect 2 "sensitivity bits 9" -- "$NNZ" sensitivity "$T/nope.nnz" --bits 4,9; err_names "'9'" "bits 9"
expect 2 "sensitivity dangling ..." -- "$NNZ" sensitivity "$T/nope.nnz" --sparsities 0,10,...; err_names "..." "dangling ..."
expect 2 "sensitivity bad --limit-test" -- "$NNZ" sensitivity "$T/nope.nnz" --limit-test 0; err_names "limit-test" "bad --limit-test"
expect 1 "sensitivity missing model" -- "$NNZ" sensitivity "$T/nope.nnz"; err_names "$T/nope.nnz" "sensitivity missing model"
expect 2 "--target-ratio with --sparsity" -- "$NNZ" compress "$T/nope.nnz" --target-ratio 20 --sparsity 0.9 -o "$T/x.nnz"; err_names -- "--sparsity" "--target-ratio with --sparsity"
expect 2 "--target-ratio 0.5" -- "$NNZ" compress "$T/nope.nnz" --target-ratio 0.5 -o "$T/x.nnz"; err_names "target-ratio" "--target-ratio 0.5"
expect 2 "--target-ratio with slim" -- "$NNZ" compress "$T/nope.nnz" --method slim --target-ratio 10 -o "$T/x.nnz"; err_names "deep" "--target-ratio with slim"
expect 2 "--target-ratio with --no-huffman" -- "$NNZ" compress "$T/nope.nnz" --target-ratio 20 --no-huffman -o "$T/x.nnz"; err_names -- "--no-huffman" "--target-ratio with --no-huffman"
expect 2 "--sens-images alone" -- "$NNZ" prune "$T/nope.nnz" --sens-images 100 -o "$T/x.nnz"; err_names "target-ratio" "--sens-images alone"

# ---- bad files
expect 1 "missing model file" -- "$NNZ" eval "$T/nope.nnz"; err_names "$T/nope.nnz" "missing file"
printf 'hello, not a model' >"$T/text.nnz"
expect 1 "not an nnz file" -- "$NNZ" info "$T/text.nnz"; err_names "$T/text.nnz" "bad magic"

# bad idx data directories
mkdir -p "$T/badidx"
python3 - "$T/badidx" <<'PY'
import struct, sys, os
d = sys.argv[1]
def imgs(path, n, magic=0x803):
    open(path, "wb").write(struct.pack(">IIII", magic, n, 28, 28) + bytes(n * 784))
def labs(path, n, magic=0x801):
    open(path, "wb").write(struct.pack(">II", magic, n) + bytes(n))
imgs(f"{d}/train-images-idx3-ubyte", 10, magic=0x801)   # wrong magic
labs(f"{d}/train-labels-idx1-ubyte", 10)
imgs(f"{d}/t10k-images-idx3-ubyte", 10)
labs(f"{d}/t10k-labels-idx1-ubyte", 9)                   # count mismatch
PY
expect 1 "wrong idx magic" -- "$NNZ" train --model lenet300 --data "$T/badidx" --epochs 1 -o "$T/x.nnz"
err_names "train-images-idx3-ubyte" "wrong idx magic"
[ ! -e "$T/x.nnz" ] && ok || bad "failed train left an output file"

# ---- a real training run: LeNet-300-100, 1 epoch of MNIST
M=$T/l300.nnz
if "$NNZ" train --model lenet300 --data mnist --epochs 1 --seed 1 --json -o "$M" >"$T/train.json" 2>"$T/train.err"; then
  ok
  e=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_error_pct"])' "$T/train.json")
  python3 -c "import sys; sys.exit(0 if $e < 4.0 else 1)" && ok || bad "LeNet-300-100 1 epoch: test error $e% (want < 4%)"
  echo "cli_test: LeNet-300-100, 1 epoch: test error $e%"
  grep -q "^epoch 1/1 " "$T/train.err" && ok || bad "no plain per-epoch line in a non-tty log"
  "$NNZ" eval "$M" --json >"$T/eval.json" 2>"$T/err" && ok || bad "eval failed: $(cat "$T/err")"
  e2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_error_pct"])' "$T/eval.json")
  [ "$e" = "$e2" ] && ok || bad "eval error $e2 != train error $e"
  expect 0 "info" -- "$NNZ" info "$M"; grep -q "fc1" "$T/out" && ok || bad "info lists layers"
  expect 0 "info --json" -- "$NNZ" info "$M" --json
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["params"]==266610, d["params"]' "$T/out" && ok || bad "info --json params"

  # corruption: a flipped byte in the middle, and truncation, are refused naming the file
  size=$(stat -c %s "$M")
  cp "$M" "$T/flip.nnz"; printf '\xff\x00' | dd of="$T/flip.nnz" bs=1 seek=$((size/2)) conv=notrunc 2>/dev/null
  expect 1 "bit-flipped file" -- "$NNZ" eval "$T/flip.nnz"; err_names "$T/flip.nnz" "bit-flipped file"
  head -c $((size - 100)) "$M" >"$T/trunc.nnz"
  expect 1 "truncated file" -- "$NNZ" eval "$T/trunc.nnz"; err_names "$T/trunc.nnz" "truncated file"

  # an existing output is never clobbered by a failed run
  cp "$M" "$T/keep.nnz"; sum0=$(sha256sum <"$T/keep.nnz")
  expect 1 "failing train" -- "$NNZ" train --model lenet300 --data "$T/badidx" --epochs 1 -o "$T/keep.nnz"
  [ "$(sha256sum <"$T/keep.nnz")" = "$sum0" ] && ok || bad "failed run changed an existing output"
  expect 1 "unwritable output" -- "$NNZ" train --model lenet300 --data mnist --limit 64 --epochs 1 -o "$T/no/such/dir/x.nnz"
  err_names "$T/no/such/dir/x.nnz" "unwritable output"
  ls "$T" | grep -q '\.tmp\.' && bad "temporary files left behind" || ok

  # Deep Compression in small: every stage on 2000 images, the file must be much smaller and
  # evaluate from its compressed encodings
  expect 0 "prune" -- "$NNZ" prune "$M" --limit 2000 --rounds 2 --prune-epochs 1 -q -o "$T/p.nnz"
  expect 0 "quantize" -- "$NNZ" quantize "$T/p.nnz" --limit 2000 --quant-epochs 1 -q -o "$T/qz.nnz"
  expect 0 "encode" -- "$NNZ" encode "$T/qz.nnz" --json -o "$T/enc.nnz"
  s0=$(stat -c %s "$M"); s1=$(stat -c %s "$T/p.nnz"); s2=$(stat -c %s "$T/qz.nnz"); s3=$(stat -c %s "$T/enc.nnz")
  [ "$s1" -lt $((s0 / 4)) ] && [ "$s2" -lt "$s1" ] && [ "$s3" -lt "$s2" ] && ok || bad "sizes should fall at each stage: $s0 $s1 $s2 $s3"
  "$NNZ" eval "$T/enc.nnz" --json >"$T/e.json" 2>"$T/err" && ok || bad "eval of an encoded file: $(cat "$T/err")"
  ee=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_error_pct"])' "$T/e.json")
  python3 -c "import sys; sys.exit(0 if $ee < 10.0 else 1)" && ok || bad "encoded model error $ee%"
  expect 0 "info on an encoded file" -- "$NNZ" info "$T/enc.nnz"; grep -q "idx-bits" "$T/out" && ok || bad "info shows the compression table"
  # positions stored column-major: every sparse layer says so, the model evaluates the same
  expect 0 "encode --order col" -- "$NNZ" encode "$T/qz.nnz" --order col --json -o "$T/encc.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); L=[l for l in d["layers"] if l["sparse"]]; assert L and all(l["order"] == "col" for l in L), d' "$T/out" && ok || bad "encode --order col: $(head -c 300 "$T/out")"
  "$NNZ" eval "$T/encc.nnz" --json >"$T/ec.json" 2>"$T/err" && ok || bad "eval of a column-major file: $(cat "$T/err")"
  python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); assert a["correct"] == b["correct"], (a, b)' "$T/e.json" "$T/ec.json" && ok || bad "column-major file evaluates differently"
  "$NNZ" eval "$T/encc.nnz" --batch 1 --json >"$T/ec1.json" 2>"$T/err" && ok || bad "eval --batch 1: $(cat "$T/err")"
  python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); assert abs(a["correct"] - b["correct"]) <= 2, (a, b)' "$T/e.json" "$T/ec1.json" && ok || bad "batch-1 eval (column kernel) disagrees with batch 256"
  expect 2 "bad --order" -- "$NNZ" encode "$T/qz.nnz" --order diagonal -o "$T/x.nnz"; err_names diagonal "bad --order"
  expect 0 "compress" -- "$NNZ" compress "$M" --method deep --limit 2000 --rounds 1 --prune-epochs 1 --quant-epochs 1 -q --json -o "$T/c.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ratio"] > 20, d["ratio"]' "$T/out" && ok || bad "compress ratio: $(head -c 300 "$T/out")"
  expect 0 "compress slim,deep" -- "$NNZ" compress "$M" --method slim,deep --limit 1000 --rounds 1 --prune-epochs 1 --quant-epochs 1 -q --json -o "$T/sd.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["method"] == "slim,deep" and d["ratio"] > 20, d' "$T/out" && ok || bad "compress slim,deep: $(head -c 300 "$T/out")"
  expect 2 "unknown method" -- "$NNZ" compress "$M" --method magic -o "$T/c2.nnz"; err_names magic "unknown method"
  expect 2 "compress bad --finetune-lr" -- "$NNZ" compress "$M" --method slim --finetune-lr -1 -o "$T/c3.nnz"; err_names "finetune-lr" "compress bad --finetune-lr"
  [ ! -e "$T/c3.nnz" ] && ok || bad "compress bad --finetune-lr left an output"
  expect 2 "bad sparsity spec" -- "$NNZ" prune "$M" --sparsity fc9=0.5 -o "$T/p2.nnz"; err_names fc9 "bad layer name"
  cp "$T/enc.nnz" "$T/encflip.nnz"; es=$(stat -c %s "$T/enc.nnz")
  python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[int(sys.argv[2])]^=0x5a; open(p,"wb").write(b)' "$T/encflip.nnz" $((es - 40))
  expect 1 "corrupt encoded file" -- "$NNZ" eval "$T/encflip.nnz"; err_names "$T/encflip.nnz" "corrupt encoded file"
  expect 0 "slim" -- "$NNZ" slim "$M" --limit 2000 --epochs 1 --finetune-epochs 1 --lambda 1e-2 -q --json -o "$T/s.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["inputs_before"] == 784 and 0 < d["inputs_after"] <= 784, d' "$T/out" && ok || bad "slim --json inputs: $(head -c 300 "$T/out")"
  expect 0 "slim --input-lambda" -- "$NNZ" slim "$M" --limit 2000 --epochs 1 --ramp 0 --finetune-epochs 0 --lambda 0 --input-lambda 1 -q --json -o "$T/si.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["inputs_after"] < 784, d' "$T/out" && ok || bad "slim --input-lambda removed no feature: $(head -c 300 "$T/out")"
  "$NNZ" info "$T/si.nnz" >"$T/out" 2>"$T/err" && grep -q " select " "$T/out" && ok || bad "info shows no select node: $(head -c 300 "$T/out")"
  expect 0 "eval input-slimmed" -- "$NNZ" eval "$T/si.nnz"
  expect 2 "bad --input-lambda" -- "$NNZ" slim "$M" --input-lambda -1 -o "$T/x.nnz"; err_names "input-lambda" "bad --input-lambda"
  expect 0 "eval slim" -- "$NNZ" eval "$T/s.nnz"
  expect 0 "slim --rebalance --finetune-wd" -- "$NNZ" slim "$M" --limit 2000 --epochs 1 --finetune-epochs 1 --lambda 1e-2 --rebalance --finetune-wd 0 -q --json -o "$T/sr.nnz"
  expect 2 "slim bad --wd" -- "$NNZ" slim "$M" --wd 2 -o "$T/x.nnz"; err_names "wd" "slim bad --wd"
  expect 2 "slim bad --finetune-wd" -- "$NNZ" slim "$M" --finetune-wd -1 -o "$T/x.nnz"; err_names "finetune-wd" "slim bad --finetune-wd"
  expect 0 "slim --val" -- "$NNZ" slim "$M" --limit 2000 --val 500 --epochs 1 --finetune-epochs 2 --lambda 1e-2 -q --json -o "$T/sv.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["val_images"] == 500 and 0 <= d["val_error_pct"] <= 100 and 0 <= d["finetune_kept_epoch"] <= 2, d' "$T/out" && ok || bad "slim --val: $(head -c 300 "$T/out")"
  expect 2 "slim --val too large" -- "$NNZ" slim "$M" --limit 2000 --val 2000 -o "$T/sv2.nnz"; err_names "validation" "slim --val too large"
  [ ! -e "$T/sv2.nnz" ] && ok || bad "slim --val too large left an output"
  expect 0 "slim --distill" -- "$NNZ" slim "$M" --limit 2000 --epochs 1 --finetune-epochs 1 --lambda 1e-2 --distill 0.5 --distill-temp 3 -q --json -o "$T/sd1.nnz"
  expect 2 "slim --distill 2" -- "$NNZ" slim "$M" --limit 2000 --distill 2 -o "$T/sd2.nnz"; err_names "distill" "slim --distill 2"
  [ ! -e "$T/sd2.nnz" ] && ok || bad "slim --distill 2 left an output"

  # sensitivity analysis on a tiny LeNet-300-100 (1000 images, 1 epoch): JSON, table and plot
  S=$T/tiny.nnz
  expect 0 "train tiny" -- "$NNZ" train --model lenet300 --data mnist --limit 1000 --epochs 1 -q -o "$S"
  expect 0 "sensitivity --json" -- "$NNZ" sensitivity "$S" --limit-test 500 --layers fc1,fc3 --sparsities 0,25,...,75,90 --bits 3,5 --plot "$T/sens.svg" --json -q
  python3 - "$T/out" "$T/sens.svg" <<'PY' && ok || bad "sensitivity --json / plot: $(head -c 300 "$T/out")"
import json, sys, xml.etree.ElementTree as ET
d = json.load(open(sys.argv[1]))
assert d["n_images"] == 500 and d["sparsities_pct"] == [0, 25, 50, 75, 90] and d["bits"] == [5, 3], d
assert [l["name"] for l in d["layers"]] == ["fc1", "fc3"], d["layers"]
for l in d["layers"]:
    assert l["prune_error_pct"][0] == d["baseline_error_pct"], l
    assert len(l["prune_error_pct"]) == 5 and len(l["quant_error_pct"]) == 2, l
    assert l["prune_error_pct"][-1] >= l["prune_error_pct"][0], l
root = ET.parse(sys.argv[2]).getroot()
assert root.tag.endswith("svg"), root.tag
assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 2
PY
  expect 0 "sensitivity table" -- "$NNZ" sensitivity "$S" --limit-test 200 --sparsities 0,50,90 -q
  grep -q "baseline test error" "$T/out" && grep -q "^  fc2 " "$T/out" && ok || bad "sensitivity table: $(head -c 300 "$T/out")"
  expect 2 "sensitivity unknown layer" -- "$NNZ" sensitivity "$S" --layers fc1,fc9; err_names fc9 "sensitivity unknown layer"
  expect 1 "sensitivity unwritable plot" -- "$NNZ" sensitivity "$S" --plot "$T/no/such/dir/s.svg"; err_names "$T/no/such/dir/s.svg" "unwritable plot"
  ls "$T" | grep -q '\.tmp\.' && bad "sensitivity left temporary files" || ok

  # --target-ratio: the per-layer plan reaches the estimate, the file lands near the target
  expect 0 "compress --target-ratio" -- "$NNZ" compress "$S" --method deep --target-ratio 30 --sens-images 500 --limit 1000 --rounds 1 --prune-epochs 1 --quant-epochs 1 -q --json -o "$T/tr.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["target_ratio"] == 30 and d["estimated_ratio"] >= 30 and 27 <= d["ratio"] <= 45 and len(d["allocation"]) == 3, d' "$T/out" && ok || bad "compress --target-ratio: $(head -c 400 "$T/out")"
  expect 0 "prune --target-ratio" -- "$NNZ" prune "$S" --target-ratio 8 --sens-images 500 --limit 1000 --rounds 1 --prune-epochs 1 -q --json -o "$T/tp.nnz"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["estimated_ratio"] >= 8 and 7.2 <= d["ratio"] <= 12, d' "$T/out" && ok || bad "prune --target-ratio: $(head -c 400 "$T/out")"

  # determinism: 1 thread, same seed -> identical files
  "$NNZ" train --model lenet300 --data mnist --limit 2000 --epochs 1 --seed 5 --threads 1 -q -o "$T/d1.nnz" >/dev/null 2>&1
  "$NNZ" train --model lenet300 --data mnist --limit 2000 --epochs 1 --seed 5 --threads 1 -q -o "$T/d2.nnz" >/dev/null 2>&1
  cmp -s "$T/d1.nnz" "$T/d2.nnz" && ok || bad "--threads 1 --seed 5 twice gave different files"

  # checkpoints: 1 epoch, then --resume to 3, gives the 3-epoch run's file byte for byte
  # (multistep: the LR does not depend on the total, so both runs see the same schedule)
  TR="--model lenet300 --data mnist --limit 2000 --schedule multistep --milestones 2 --seed 3 --threads 1 -q"
  "$NNZ" train $TR --epochs 3 -o "$T/r3.nnz" >/dev/null 2>&1
  "$NNZ" train $TR --epochs 1 -o "$T/r1.nnz" >/dev/null 2>&1
  [ -f "$T/r1.ckpt.nnz" ] && ok || bad "no default checkpoint OUTPUT.ckpt.nnz"
  expect 0 "resume to 3 epochs" -- "$NNZ" train --resume "$T/r1.ckpt.nnz" --epochs 3 --threads 1 -q -o "$T/r3b.nnz"
  cmp -s "$T/r3.nnz" "$T/r3b.nnz" && ok || bad "1 epoch + --resume to 3 differs from 3 epochs straight"
  expect 0 "eval a checkpoint" -- "$NNZ" eval "$T/r1.ckpt.nnz"
  # bad --resume files and settings: one line, non-zero
  expect 1 "resume from a finished model" -- "$NNZ" train --resume "$T/r3.nnz" -o "$T/x3.nnz"; err_names "not a checkpoint" "resume from a model"
  expect 1 "resume from a text file" -- "$NNZ" train --resume "$T/text.nnz" -o "$T/x3.nnz"; err_names "$T/text.nnz" "resume from text"
  cp "$T/r1.ckpt.nnz" "$T/bad.ckpt.nnz"; cs=$(stat -c %s "$T/bad.ckpt.nnz")
  python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[int(sys.argv[2])]^=0x21; open(p,"wb").write(b)' "$T/bad.ckpt.nnz" $((cs - 10))
  expect 1 "corrupt checkpoint" -- "$NNZ" train --resume "$T/bad.ckpt.nnz" -o "$T/x3.nnz"; err_names "(state)" "corrupt checkpoint"
  expect 2 "resume with another lr" -- "$NNZ" train --resume "$T/r1.ckpt.nnz" --lr 0.5 -q -o "$T/x3.nnz"; err_names "lr" "resume with another lr"
  expect 2 "resume with another model" -- "$NNZ" train --resume "$T/r1.ckpt.nnz" --model lenet5 -o "$T/x3.nnz"; err_names lenet5 "resume with another model"
  [ ! -e "$T/x3.nnz" ] && ok || bad "a refused resume wrote its output"

  # Ctrl-C: SIGINT once the first checkpoint exists stops after the current step with exit 130,
  # a checkpoint and how to resume; resuming gives the uninterrupted run's file
  TI="--model lenet300 --data mnist --limit 10000 --epochs 6 --seed 4 --threads 1"
  "$NNZ" train $TI -q -o "$T/i6.nnz" >/dev/null 2>&1
  "$NNZ" train $TI -o "$T/int.nnz" >/dev/null 2>"$T/int.err" &
  pid=$!
  for _ in $(seq 1 600); do [ -e "$T/int.ckpt.nnz" ] && break; sleep 0.1; done
  kill -INT "$pid" 2>/dev/null
  wait "$pid"; rc=$?
  [ "$rc" = 130 ] && ok || bad "SIGINT: exit $rc, want 130 ($(tail -n 2 "$T/int.err"))"
  [ -e "$T/int.ckpt.nnz" ] && [ ! -e "$T/int.nnz" ] && ok || bad "SIGINT: want a checkpoint and no output"
  grep -q "saved to $T/int.ckpt.nnz; resume with: nnzip train --resume $T/int.ckpt.nnz" "$T/int.err" && ok || bad "SIGINT message: $(tail -n 1 "$T/int.err")"
  expect 0 "resume after SIGINT" -- "$NNZ" train --resume "$T/int.ckpt.nnz" --threads 1 -q -o "$T/int.nnz"
  cmp -s "$T/i6.nnz" "$T/int.nnz" && ok || bad "interrupted + resumed run differs from the uninterrupted one"
  ls "$T" | grep -q '\.tmp\.' && bad "temporary files left behind by checkpoints" || ok
else
  bad "training failed: $(tail -n 2 "$T/train.err")"
fi

echo "cli_test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
