#!/usr/bin/env bash
# Fuzz the safetensors header parser and the torch checkpoint (pickle) reader, then
# replay both corpora under g++ sanitizers.
#
#   fuzz/run.sh [SECONDS]      (default 60, split evenly between the two harnesses)
#
# 1. Builds fuzz/fuzz_header and fuzz/fuzz_pickle with clang++-14, libFuzzer, ASan and
#    UBSan (build/fuzz) and runs each for half of SECONDS on a copy of its corpus
#    (fuzz/corpus -> fuzz/corpus-work with fuzz/header.dict; fuzz/corpus-pickle ->
#    fuzz/corpus-pickle-work; the copies are not committed).
# 2. Builds replay_header and replay_pickle with g++, ASan and UBSan, -Werror
#    (build/sanitize) and replays the corpora plus everything the fuzzers found.
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
cmake --build build/fuzz --target fuzz_header fuzz_pickle

artifacts=build/fuzz/artifacts
mkdir -p "$artifacts"
# halt_on_error / abort_on_error: a sanitizer report is a crash libFuzzer records.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
half=$(( (seconds + 1) / 2 ))

fuzz() {  # fuzz NAME CORPUS WORK [extra libFuzzer flags]
  local name="$1" corpus="$2" work="$3"
  shift 3
  rm -rf "$work"
  mkdir -p "$work"
  cp "$corpus"/* "$work"/
  echo "== fuzz $name: ${half}s"
  local status=0
  "build/fuzz/$name" "$work" -max_total_time="$half" -max_len=65536 -timeout=5 -rss_limit_mb=1024 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: $name failed (exit $status); inputs in $artifacts/:" >&2
    ls -l "$artifacts" >&2 || true
    exit "$status"
  fi
}
fuzz fuzz_header fuzz/corpus fuzz/corpus-work -dict=fuzz/header.dict
fuzz fuzz_pickle fuzz/corpus-pickle fuzz/corpus-pickle-work

echo "== build: ASan + UBSan replay (g++)"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_CXX_COMPILER=g++ \
  -DPYAUDIT_SANITIZE=ON -DPYAUDIT_PYTHON=OFF -DPYAUDIT_WERROR=ON >/dev/null
cmake --build build/sanitize --target replay_header replay_pickle

echo "== replay: fuzz/corpus and fuzz/corpus-work"
build/sanitize/replay_header fuzz/corpus fuzz/corpus-work
echo "== replay: fuzz/corpus-pickle and fuzz/corpus-pickle-work"
build/sanitize/replay_pickle fuzz/corpus-pickle fuzz/corpus-pickle-work
echo "fuzz/run.sh: ok"
