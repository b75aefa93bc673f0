#!/usr/bin/env bash
# The whole test suite (what `make test` runs): release build and tests, PyTorch reference
# comparison, CLI end-to-end tests, then the unit tests again under ASan+UBSan, the fuzz targets
# for a bounded time, and valgrind on the file reader. Prints "tests: N passed, M failed" last.
set -u
cd "$(dirname "$0")/.."
JOBS=$(nproc)
pass=0; fail=0; failed_names=()
note() { printf '== %s\n' "$*"; }
# run NAME CMD...: runs a test program; counts its "N passed, M failed" line (or 1/0 by exit code)
run() {
  local name=$1; shift
  local log; log=$(mktemp)
  "$@" >"$log" 2>&1; local rc=$?
  cat "$log"
  local line; line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    local p f
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail + 1)); fi
  elif [ "$rc" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
  [ "$rc" -ne 0 ] && failed_names+=("$name")
  rm -f "$log"
  return 0
}

note "release build"
if ! make -j"$JOBS" all >build.log 2>&1; then tail -n 30 build.log; echo "tests: 0 passed, 1 failed"; exit 1; fi

note "PyTorch reference data"
run torch_ref_gen /usr/bin/python3 scripts/torch_ref.py build/torch_ref.bin

note "unit tests (release)"
for t in build/tests/test_*; do run "$(basename "$t")" "$t" build/torch_ref.bin; done

note "data (MNIST for the CLI tests; quick when already fetched)"
run fetch_data scripts/fetch_data.sh

note "CLI end-to-end"
run cli_test tests/cli_test.sh build/nnzip

note "sanitizer build (ASan+UBSan)"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
if make -j"$JOBS" BUILD=build-asan OPT="-O1 $SAN" EXTRA_LDFLAGS="$SAN" all >build-asan.log 2>&1; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  for t in build-asan/tests/test_*; do run "asan:$(basename "$t")" "$t" build/torch_ref.bin; done
  run asan:cli_test tests/cli_test.sh build-asan/nnzip
  unset ASAN_OPTIONS UBSAN_OPTIONS
else
  tail -n 30 build-asan.log; fail=$((fail + 1)); failed_names+=("asan build")
fi

# the kernels' 8-lane (AVX2 + FMA, no AVX-512) variants: register tiles and shuffles differ
note "AVX2 build (conv and sparse kernels, 8 lanes)"
if make -j"$JOBS" BUILD=build-avx2 OPT="-O2 -mavx2 -mfma -fno-math-errno" build-avx2/tests/test_gradcheck \
    build-avx2/tests/test_compress >build-avx2.log 2>&1; then
  run avx2:test_gradcheck build-avx2/tests/test_gradcheck
  run avx2:test_compress build-avx2/tests/test_compress
else
  tail -n 30 build-avx2.log; fail=$((fail + 1)); failed_names+=("avx2 build")
fi

if [ -x scripts/run_fuzz.sh ]; then
  note "fuzz targets (bounded)"
  run fuzz scripts/run_fuzz.sh "${FUZZ_SECONDS:-20}"
fi

if command -v valgrind >/dev/null; then
  # valgrind cannot run AVX-512 code: a build without -march=native for it
  note "valgrind (format, Huffman, data readers)"
  if make -j"$JOBS" BUILD=build-vg OPT="-O1" all >build-vg.log 2>&1; then
    for t in test_format test_huffman test_data; do
      [ -x build-vg/tests/$t ] && run "valgrind:$t" valgrind -q --error-exitcode=9 --leak-check=full --show-leak-kinds=definite build-vg/tests/$t
    done
    # the same build has no AVX-512: the portable kernels (sparse panels, ...) get their checks
    run portable:test_compress build-vg/tests/test_compress
  else
    tail -n 30 build-vg.log; fail=$((fail + 1)); failed_names+=("valgrind build")
  fi
fi

[ ${#failed_names[@]} -gt 0 ] && echo "failing: ${failed_names[*]}"
echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
