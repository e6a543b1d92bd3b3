#!/usr/bin/env bash
# ms-swift 4.x on CPU: the seed story and the healthy runs beside it.
#   tests/frameworks/run_swift4.sh WORKDIR        (venv: /work/venvs/fw-swift4, see README.md)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/work/venvs/fw-swift4}
WORK=${1:?WORKDIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 USE_HF=1 CUDA_VISIBLE_DEVICES= \
       TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 WANDB_DISABLED=true
PATH=$VENV/bin:$PATH
mkdir -p "$WORK" && cd "$WORK"
[ -d tiny/qwen2_5_vl ] || python "$HERE/make_tiny.py" tiny qwen2_5_vl
COMMON=(--model_type qwen2_5_vl --template qwen2_5_vl --torch_dtype float32 --per_device_train_batch_size 2 --gradient_accumulation_steps 1
        --max_steps 2 --save_steps 2 --logging_steps 1 --max_length 512 --dataloader_num_workers 0
        --dataset_num_proc 1 --report_to none --save_only_model true --attn_impl sdpa)
GRPO=(--rlhf_type grpo --dataset tiny/data/grpo.jsonl --reward_funcs format --num_generations 2
      --max_completion_length 8 --per_device_train_batch_size 2 --temperature 1.0)
log() { echo "+ $*" | tee -a commands.txt; "$@" > "logs/$(date +%s%N).log" 2>&1 || { echo "FAILED: $*" | tee -a commands.txt; return 1; }; }
mkdir -p logs

# 1. SFT with LoRA on purpose, then a merged export (the -merged dir carries args.json, tuner_type lora)
[ -d out/sft-lora ] || log swift sft --model tiny/qwen2_5_vl --dataset tiny/data/sft.jsonl --tuner_type lora --lora_rank 4 \
    --output_dir out/sft-lora "${COMMON[@]}"
SFT=$(ls -d out/sft-lora/v*/checkpoint-2 | head -1)
[ -d "$SFT-merged" ] || log swift export --adapters "$SFT" --merge_lora true
# 2. the seed story: GRPO meant full, from the merged dir, load_args true -> tuner_type lora re-read
[ -d out/grpo-load-args-true ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --tuner_type full --load_args true \
    --output_dir out/grpo-load-args-true "${COMMON[@]}"
# 3. the same with load_args false (as the fix says) and with the default (false for rlhf in 4.x)
[ -d out/grpo-load-args-false ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --tuner_type full --load_args false \
    --output_dir out/grpo-load-args-false "${COMMON[@]}"
[ -d out/grpo-default ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --tuner_type full \
    --output_dir out/grpo-default "${COMMON[@]}"
# 4. healthy full SFT, from the base model
[ -d out/sft-full ] || log swift sft --model tiny/qwen2_5_vl --dataset tiny/data/sft.jsonl --tuner_type full \
    --output_dir out/sft-full "${COMMON[@]}"
# 5. a GRPO run that wants LoRA on the merged model (healthy adapter run, load_args default false)
[ -d out/grpo-lora ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --tuner_type lora --lora_rank 4 \
    --output_dir out/grpo-lora "${COMMON[@]}"
echo done
