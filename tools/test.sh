#!/usr/bin/env bash
# Installs what is missing, builds everything and runs the whole test suite:
#   1. a release build (RelWithDebInfo): unit + integration tests against a real mosquitto;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build of the same suite, with the
#      sanitized plugin loaded into the real broker (the runtime is preloaded into mosquitto);
#   3. the libFuzzer targets, each for a bounded time (tools/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure --timeout 300 -j"$jobs"

# 3. (run here so that the suite's last lines are ctest's summary) libFuzzer targets: payload
#    filter, control API, schema loader, side by side for 40 s.
bash tools/fuzz.sh

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGDPR_SANITIZE=ON -DGDPR_BUILD_BENCH=OFF
cmake --build build-asan -j"$jobs"
ctest --test-dir build-asan --output-on-failure --timeout 300 -j"$jobs"
