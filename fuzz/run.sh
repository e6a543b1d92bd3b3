#!/usr/bin/env bash
# Fuzz the safetensors header parser, then replay the corpus under g++ sanitizers.
#
#   fuzz/run.sh [SECONDS]      (default 60)
#
# 1. Builds fuzz/fuzz_header with clang++-14, libFuzzer, ASan and UBSan
#    (build/fuzz) and runs it for SECONDS on a copy of fuzz/corpus
#    (fuzz/corpus-work, not committed) with fuzz/header.dict.
# 2. Builds replay_header with g++, ASan and UBSan, -Werror (build/sanitize)
#    and replays fuzz/corpus plus everything the fuzzer found.
# Exits non-zero on any crash, failed invariant, leak, timeout or OOM; a
# crashing input is left in build/fuzz/artifacts/ (add it to fuzz/corpus once fixed).
#
# Needs cmake, ninja, g++, clang-14 and libclang-rt-14-dev (libFuzzer).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

missing=()
for tool in cmake:cmake ninja:ninja-build g++:g++ clang++-14:clang-14; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ -z "$(find /usr/lib/llvm-14/lib/clang -name 'libclang_rt.fuzzer*.a' 2>/dev/null | head -1)" ]; then
  missing+=(libclang-rt-14-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "fuzz/run.sh: missing tools; install with: apt-get install -y ${missing[*]}" >&2
  exit 2
fi

echo "== build: libFuzzer + ASan + UBSan (clang++-14)"
cmake -S . -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 \
  -DPYAUDIT_FUZZ=ON -DPYAUDIT_PYTHON=OFF -DPYAUDIT_WERROR=ON >/dev/null
cmake --build build/fuzz --target fuzz_header

work=fuzz/corpus-work
artifacts=build/fuzz/artifacts
rm -rf "$work"
mkdir -p "$work" "$artifacts"
cp fuzz/corpus/* "$work"/

echo "== fuzz: ${seconds}s"
# halt_on_error / abort_on_error: a sanitizer report is a crash libFuzzer records.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
status=0
build/fuzz/fuzz_header "$work" \
  -max_total_time="$seconds" -max_len=65536 -timeout=5 -rss_limit_mb=1024 \
  -dict=fuzz/header.dict -artifact_prefix="$artifacts/" -print_final_stats=1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz/run.sh: fuzz_header failed (exit $status); inputs in $artifacts/:" >&2
  ls -l "$artifacts" >&2 || true
  exit "$status"
fi

echo "== build: ASan + UBSan replay (g++)"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_CXX_COMPILER=g++ \
  -DPYAUDIT_SANITIZE=ON -DPYAUDIT_PYTHON=OFF -DPYAUDIT_WERROR=ON >/dev/null
cmake --build build/sanitize --target replay_header

echo "== replay: fuzz/corpus and $work"
build/sanitize/replay_header fuzz/corpus "$work"
echo "fuzz/run.sh: ok"
