#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for FUZZ_SECONDS (default 60),
# starting from the seed corpus in tests/fuzz/corpus/<target>. Prints executions and findings per
# target; exits non-zero when any target finds a crash, a leak, undefined behaviour or a timeout
# (the reproducer is kept in build-fuzz/findings/). Called by tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
seconds=${FUZZ_SECONDS:-60}
jobs=$(nproc 2>/dev/null || echo 2)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGDPR_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs"

mkdir -p build-fuzz/findings
failed=0
summary=()
for target in payload_filter schema_loader control_api; do
  corpus=build-fuzz/corpus/$target
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/$target/* "$corpus/"
  log=build-fuzz/fuzz_$target.log
  status=0
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len=262144 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -dict=tests/fuzz/json.dict \
    -artifact_prefix="build-fuzz/findings/$target-" "$corpus" > "$log" 2>&1 || status=$?
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
