#!/usr/bin/env bash
# Pretrain on the GPUs of this machine (one process drives all local GPUs through pmap).
#
#   launch/local_gpu.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
#
# e.g. launch/local_gpu.sh configs/mixmae_swin_base_w14_600ep.py ~/runs/base \
#        --config.data.image_folder=/data/imagenet/train --config.grad_accum_steps=8
# (batch_size is the global batch per update, 2048 in the recipe; grad_accum_steps=8 runs it as
#  8 forward/backward passes of 256, so the recipe's lr and schedule hold on one GPU.)
# Install first with: pip install -e '.[gpu,train]'
# Exit code: 0 finished, 75 preempted (rerun to resume), 1 failed; WORKDIR/status.json says which.
# Re-running the same command resumes from the newest checkpoint in WORKDIR.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,13p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."

# Let XLA take most of the GPU memory up front (TensorFlow only uses the CPU build).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# Overlap the gradient all-reduce with compute on multi-GPU hosts.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
mkdir -p "$WORKDIR"
python3 -m mixmae_jax.train --config="$CONFIG" --workdir="$WORKDIR" "$@" \
  2>&1 | tee -a "$WORKDIR/train.log"
