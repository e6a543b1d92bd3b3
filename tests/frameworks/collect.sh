#!/usr/bin/env bash
# Copy a framework run's output tree into tests/frameworks/data/NAME/, trimmed, with its VERSIONS note.
#   [CASES='case1 case2*'] [KEEP_STATES=1] tests/frameworks/collect.sh VENV WORKDIR NAME [EXTRA_EXCLUDE...]
# Trimmed: optimizer/scheduler/rng states and logs are replaced by empty files of the same name
# (discovery sees the same names; the bytes are not needed by any finding), unless KEEP_STATES=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$1 WORK=$2 NAME=$3
shift 3
DEST="$HERE/data/$NAME"
rm -rf "$DEST" && mkdir -p "$DEST"
if [ -n "${CASES:-}" ]; then  # only these cases (folders of WORK/out, globs allowed)
  (cd "$WORK/out" && for c in $CASES; do cp -a "$c" "$DEST/"; done)
else
  cp -a "$WORK/out/." "$DEST/"
fi
# LlamaBoard (LLaMA-Factory's web UI) saves under saves/ of where it runs, not under out/
if [ -d "$WORK/saves" ] && [ -z "${CASES:-}" ]; then cp -a "$WORK/saves" "$DEST/"; fi
# the tiny base models the runs started from (their args name them as tiny/...)
mkdir -p "$DEST/tiny" && for m in "$WORK"/tiny/*/; do
  [ "$(basename "$m")" = tokenizer ] || cp -a "$m" "$DEST/tiny/"
done
if [ "${KEEP_STATES:-0}" != 1 ]; then
  find "$DEST" -type f \( -name 'optimizer.pt' -o -name 'optimizer.bin' -o -name 'scheduler.pt' -o -name 'rng_state*.pth' \
       -o -name '*optim_states.pt' -o -name '*.distcp' -path '*optimizer_*' -o -name 'events.out.tfevents*' \) \
       -exec truncate -s 0 {} +
fi
for pattern in "$@"; do find "$DEST" -name "$pattern" -exec rm -rf {} +; done
{
  echo "framework run: $NAME"
  echo "written by: tests/frameworks ($(basename "$0") from the run in $WORK)"
  echo "date: $(date -u +%Y-%m-%d)"
  echo "python: $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  "$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
for name in ("ms-swift", "transformers", "torch", "peft", "trl", "accelerate", "deepspeed", "llamafactory", "torchvision", "torchaudio", "gradio", "safetensors", "tokenizers"):
    try:
        print(f"{name}: {m.version(name)}")
    except m.PackageNotFoundError:
        pass
EOF
  echo "trimmed: optimizer, scheduler, rng and ZeRO optimizer states truncated to 0 bytes (names kept) unless noted"
  echo "commands (relative to WORKDIR; absolute paths recorded in the trees point at WORKDIR=$WORK):"
  if [ -n "${CASES:-}" ]; then
    for c in $CASES; do grep -F -- " $c " "$WORK/commands.txt" || true; done | sed 's/^/  /'
  else
    sed 's/^/  /' "$WORK/commands.txt"
  fi
  [ "${KEEP_STATES:-0}" = 1 ] && echo "kept: optimizer and ZeRO states as written (the consolidation advice reads them)"
} > "$DEST/VERSIONS.txt"
du -sh "$DEST"
