#!/usr/bin/env bash
# Pretrain with SLURM: one process per node (each drives its node's GPUs); JAX reads the job's
# nodes, process count and ids from SLURM itself, so no coordinator flags are needed.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
#
# WORKDIR must be shared by all nodes. A preempted job (SIGTERM) saves a checkpoint and exits
# with code 75; requeue it (sbatch --requeue, or resubmit) and it resumes. WORKDIR/status.json
# says running, preempted, finished or failed. Install first: pip install -e '.[gpu,train]'
#SBATCH --ntasks-per-node=1
#SBATCH --signal=TERM@120
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,11p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
srun --kill-on-bad-exit=1 python3 -m mixmae_jax.train --config="$CONFIG" --workdir="$WORKDIR" "$@"
