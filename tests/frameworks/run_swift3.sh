#!/usr/bin/env bash
# ms-swift 3.x on CPU: the seed story in 3.x's flags (--train_type), the healthy runs beside it,
# and resumed runs that changed the training type (--resume_from_checkpoint).
#   tests/frameworks/run_swift3.sh WORKDIR        (venv: /work/venvs/fw-swift3, see README.md)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/work/venvs/fw-swift3}
WORK=${1:?WORKDIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 USE_HF=1 CUDA_VISIBLE_DEVICES= \
       TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 WANDB_DISABLED=true
PATH=$VENV/bin:$PATH
mkdir -p "$WORK" && cd "$WORK"
[ -d tiny/qwen2 ] || python "$HERE/make_tiny.py" tiny qwen2
COMMON=(--model_type qwen2 --template qwen --torch_dtype float32 --per_device_train_batch_size 2 --gradient_accumulation_steps 1
        --max_steps 2 --save_steps 2 --logging_steps 1 --max_length 128 --dataloader_num_workers 0
        --dataset_num_proc 1 --report_to none --save_only_model true --attn_impl sdpa)
GRPO=(--rlhf_type grpo --dataset tiny/data/grpo.jsonl --reward_funcs format --num_generations 2
      --max_completion_length 8 --per_device_train_batch_size 2 --temperature 1.0)
log() { echo "+ $*" | tee -a commands.txt; "$@" > "logs/$(date +%s%N).log" 2>&1 || { echo "FAILED: $*" | tee -a commands.txt; return 1; }; }
mkdir -p logs
STEP=${STEP:-all}

if [ "$STEP" = all ] || [ "$STEP" = seed ]; then
# 1. SFT with LoRA on purpose, then a merged export (the -merged dir carries args.json, train_type lora)
[ -d out/sft-lora ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type lora --lora_rank 4 \
    --output_dir out/sft-lora "${COMMON[@]}"
SFT=$(ls -d out/sft-lora/v*/checkpoint-2 | head -1)
[ -d "$SFT-merged" ] || log swift export --adapters "$SFT" --merge_lora true
# 2. the seed story: GRPO meant full, from the merged dir, load_args true -> train_type lora re-read
[ -d out/grpo-load-args-true ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --train_type full --load_args true \
    --output_dir out/grpo-load-args-true "${COMMON[@]}" || true
# 3. the same with load_args false (as the fix says) and with the default (false for sft/rlhf in 3.12)
[ -d out/grpo-load-args-false ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --train_type full --load_args false \
    --output_dir out/grpo-load-args-false "${COMMON[@]}" || true
[ -d out/grpo-default ] || log swift rlhf "${GRPO[@]}" --model "$SFT-merged" --train_type full \
    --output_dir out/grpo-default "${COMMON[@]}" || true
# 4. healthy full SFT, from the base model
[ -d out/sft-full ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --output_dir out/sft-full "${COMMON[@]}"
fi

if [ "$STEP" = all ] || [ "$STEP" = resume ]; then
# 5. resumed runs that changed the training type. The first runs save every step with their
#    optimizer states (resume needs them), 2 steps; the resumed runs go on to step 4.
RES=(--model_type qwen2 --template qwen --torch_dtype float32 --per_device_train_batch_size 2 --gradient_accumulation_steps 1
     --save_steps 2 --logging_steps 1 --max_length 128 --dataloader_num_workers 0
     --dataset_num_proc 1 --report_to none --attn_impl sdpa)
[ -d out/resume-lora ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type lora --lora_rank 4 \
    --max_steps 2 --output_dir out/resume-lora "${RES[@]}"
LORA=$(ls -d out/resume-lora/v*/checkpoint-2 | head -1)
[ -d out/resume-full ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --max_steps 2 --output_dir out/resume-full "${RES[@]}"
FULL=$(ls -d out/resume-full/v*/checkpoint-2 | head -1)
# LoRA checkpoint resumed as full (load_args default false; then true)
[ -d out/lora-resumed-full ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --resume_from_checkpoint "$LORA" --max_steps 4 --output_dir out/lora-resumed-full "${RES[@]}" || true
[ -d out/lora-resumed-full-only-model ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --resume_from_checkpoint "$LORA" --resume_only_model true --max_steps 4 --output_dir out/lora-resumed-full-only-model "${RES[@]}" || true
[ -d out/lora-resumed-full-load-args ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --resume_from_checkpoint "$LORA" --resume_only_model true --load_args true --max_steps 4 \
    --output_dir out/lora-resumed-full-load-args "${RES[@]}" || true
# full checkpoint resumed as LoRA
[ -d out/full-resumed-lora ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type lora --lora_rank 4 \
    --resume_from_checkpoint "$FULL" --max_steps 4 --output_dir out/full-resumed-lora "${RES[@]}" || true
# the same checkpoints resumed with the type they were trained with (healthy resumes)
[ -d out/lora-resumed-lora ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type lora --lora_rank 4 \
    --resume_from_checkpoint "$LORA" --max_steps 4 --output_dir out/lora-resumed-lora "${RES[@]}" || true
[ -d out/full-resumed-full ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --resume_from_checkpoint "$FULL" --max_steps 4 --output_dir out/full-resumed-full "${RES[@]}" || true
# the LoRA checkpoint passed as --adapters (ms-swift's "resume by loading adapter weights only") with
# --train_type full: load_args default (false), then load_args true
[ -d out/adapters-full ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --adapters "$LORA" --max_steps 2 --output_dir out/adapters-full "${RES[@]}" || true
[ -d out/adapters-full-load-args ] || log swift sft --model tiny/qwen2 --dataset tiny/data/sft.jsonl --train_type full \
    --adapters "$LORA" --load_args true --max_steps 2 --output_dir out/adapters-full-load-args "${RES[@]}" || true
fi
echo done
