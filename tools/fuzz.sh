#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs them side by side, each for
# FUZZ_SECONDS (default 40), starting from the seed corpus in tests/fuzz/corpus/<target>. Prints executions and findings per
# target; exits non-zero when any target finds a crash, a leak, undefined behaviour or a timeout
# (the reproducer is kept in build-fuzz/findings/). Called by tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
seconds=${FUZZ_SECONDS:-40}
jobs=$(nproc 2>/dev/null || echo 2)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGDPR_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs"

mkdir -p build-fuzz/findings
targets=(payload_filter schema_loader control_api)
declare -A pid
# The fuzzers stop with the script, however it ends.
trap 'for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
# Side by side so that CI's wall time pays for one target, not three.
for target in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$target
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/$target/* "$corpus/"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len=262144 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -dict=tests/fuzz/json.dict \
    -artifact_prefix="build-fuzz/findings/$target-" "$corpus" > "build-fuzz/fuzz_$target.log" 2>&1 &
  pid[$target]=$!
done
failed=0
summary=()
for target in "${targets[@]}"; do
  log=build-fuzz/fuzz_$target.log
  corpus=build-fuzz/corpus/$target
  status=0
  wait "${pid[$target]}" || status=$?
  unset "pid[$target]"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [ "$status" -ne 0 ]; then
    failed=1
    summary+=("$target: FINDING after ${runs:-?} executions (exit $status); see $log and build-fuzz/findings/")
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -10 >&2 || true
  else
    summary+=("$target: ${runs:-?} executions in ${seconds} s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs, no finding")
  fi
done
echo "fuzzing summary:"
printf '  %s\n' "${summary[@]}"
exit "$failed"
