#!/usr/bin/env bash
# Builds every fuzz/fuzz_*.c as a libFuzzer target (clang, ASan+UBSan) and runs each for a
# bounded time on a copy of its committed corpus (fuzz/corpus/<name>/). A crash fails the run and
# leaves the reproducer in build-fuzz/. Usage: scripts/run_fuzz.sh [SECONDS_PER_TARGET]
set -u
cd "$(dirname "$0")/.."
SECS=${1:-20}
command -v clang >/dev/null || { echo "run_fuzz: clang not found (scripts/install_deps.sh installs it)"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
mkdir -p build-fuzz
srcs=$(ls src/*/*.c)
pass=0; fail=0
for f in fuzz/fuzz_*.c; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .c); short=${name#fuzz_}
  bin=build-fuzz/$name
  if ! clang -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 -fopenmp \
      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
      -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp "$f" $srcs \
      -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
      -lopenblas -lz -lm -o "$bin" 2>build-fuzz/$name.build.log; then
    echo "FAIL: $name does not build"; tail -n 5 build-fuzz/$name.build.log; fail=$((fail+1)); continue
  fi
  work=$(mktemp -d); [ -d "fuzz/corpus/$short" ] && cp -r "fuzz/corpus/$short/." "$work/"
  if (cd build-fuzz && "./$name" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "$work" >"$name.log" 2>&1); then
    echo "$name: ok, $(grep -m1 'stat::number_of_executed_units' "build-fuzz/$name.log" | awk '{print $2}') runs in ${SECS}s"
    pass=$((pass+1))
  else
    echo "FAIL: $name crashed:"; grep -E 'ERROR|SUMMARY|Test unit written' "build-fuzz/$name.log" | head -n 5; fail=$((fail+1))
  fi
  rm -rf "$work"
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
