#!/usr/bin/env bash
# LLaMA-Factory on CPU: LoRA, full and freeze SFT on a tiny Qwen2, a yaml naming no finetuning_type
# (LLaMA-Factory's default), a merged export of the LoRA, and two runs launched from LlamaBoard
# (the web UI: run_llamaboard.py), which writes training_args.yaml into saves/.../OUTPUT.
#   tests/frameworks/run_llamafactory.sh WORKDIR      (venv: /work/venvs/fw-llamafactory, see README.md)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/work/venvs/fw-llamafactory}
WORK=${1:?WORKDIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CUDA_VISIBLE_DEVICES= TOKENIZERS_PARALLELISM=false \
       OMP_NUM_THREADS=1 WANDB_DISABLED=true DISABLE_VERSION_CHECK=1
PATH=$VENV/bin:$PATH
mkdir -p "$WORK" && cd "$WORK"
[ -d tiny/qwen2 ] || python "$HERE/make_tiny.py" tiny qwen2
mkdir -p logs configs
log() { echo "+ $*" | tee -a commands.txt; "$@" > "logs/$(date +%s%N).log" 2>&1 || { echo "FAILED: $*" | tee -a commands.txt; return 1; }; }
common() {
  cat <<YAML
model_name_or_path: tiny/qwen2
stage: sft
do_train: true
dataset: tiny
dataset_dir: tiny/data
template: qwen
cutoff_len: 64
max_samples: 16
overwrite_cache: true
preprocessing_num_workers: 1
logging_steps: 1
save_steps: 2
max_steps: 2
per_device_train_batch_size: 2
learning_rate: 1.0e-3
report_to: none
YAML
}
for case in lora full freeze default oft; do
  { common; [ $case = default ] || echo "finetuning_type: $case"; echo "output_dir: out/$case"
    [ $case = lora ] && { echo "lora_rank: 4"; echo "lora_target: all"; }
    [ $case = freeze ] && { echo "freeze_trainable_layers: 1"; echo "freeze_trainable_modules: all"; }
  } > configs/$case.yaml
  [ -d out/$case ] || log llamafactory-cli train configs/$case.yaml
done
cat > configs/export.yaml <<YAML
model_name_or_path: tiny/qwen2
adapter_name_or_path: out/lora
template: qwen
finetuning_type: lora
export_dir: out/lora-merged
export_size: 1
export_legacy_format: false
YAML
[ -d out/lora-merged ] || log llamafactory-cli export configs/export.yaml
# the same export in the legacy format (pytorch_model.bin: a pickle)
sed -e 's#out/lora-merged#out/lora-merged-legacy#' -e 's#export_legacy_format: false#export_legacy_format: true#' \
  configs/export.yaml > configs/export-legacy.yaml
[ -d out/lora-merged-legacy ] || log llamafactory-cli export configs/export-legacy.yaml
# LlamaBoard: the UI's defaults (finetuning method: lora) and the method set to full
for case in default full; do
  [ -d saves/*/*/board-$case ] || log python "$HERE/run_llamaboard.py" board-$case $case
done
echo done
