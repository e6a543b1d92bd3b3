#!/usr/bin/env bash
# Every case of run_hf.py, one at a time: Trainer + PEFT, TRL, FSDP2 (2 processes, gloo), DeepSpeed.
#   tests/frameworks/run_hf_all.sh WORKDIR            (venv: /work/venvs/fw-hf, see README.md)
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:?WORKDIR}
VENV=${VENV:-/work/venvs/fw-hf}
mkdir -p "$WORK" && cd "$WORK"
export HF_HUB_OFFLINE=1 CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
PY=$VENV/bin/python
R=$HERE/run_hf.py
[ -d tiny/llama ] || $PY "$HERE/make_tiny.py" tiny qwen2 llama
mkdir -p logs
run() { case=$1; shift; [ -d out/$case ] && return 0; echo "+ $* run_hf.py $case WORKDIR" >> commands.txt; "$@" $R $case "$WORK" > logs/$case.log 2>&1 && echo "ok $case" || echo "FAILED $case"; }
for c in trainer-full peft-lora peft-dora peft-modules-to-save trl-sft-full trl-sft-lora trl-grpo-full trl-grpo-lora; do run $c $PY; done
# accelerate picks DDP on a CPU-only machine whatever Trainer's fsdp_config says: run_hf.py
# shards with fully_shard and saves with accelerate's save_fsdp_model (see fsdp2_accelerate)
for c in fsdp2-accelerate-sharded fsdp2-accelerate-full; do run $c $PY -m torch.distributed.run --nproc_per_node 2 --master_port 29533; done
# DeepSpeed on CPU: one process, gloo; its shm op is JIT-built (a private extensions dir)
export DS_ACCELERATOR=cpu TORCH_EXTENSIONS_DIR=$WORK/torch_ext
for c in zero2 zero3-gather-false zero3-gather-true zero3-save-pretrained; do run $c $PY -m torch.distributed.run --nproc_per_node 1 --master_port 29534; done
