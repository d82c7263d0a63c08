#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM or pod slice: install this checkout on every worker and start the
# same command on all of them. JAX finds the other hosts itself (no coordinator flags needed).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]
#
#   TPU_NAME  name of the TPU VM / pod slice (gcloud compute tpus tpu-vm list)
#   ZONE      its zone, e.g. us-central2-b
#   CONFIG    a config path relative to the repo root, e.g. configs/mixmae_swin_base_w14_600ep.py
#   WORKDIR   shared by all hosts: a gs:// bucket path (checkpoints, metrics, pictures)
#
# Environment: PROJECT (gcloud project, optional), REPO_DIR on the workers (default
# ~/mixmae_jax), DATA_DIR for TFDS (default: TFDS's own), SKIP_INSTALL=1 to reuse an install.
# ImageNet for TFDS: prepare imagenet2012 once into a gs:// data_dir and pass
#   --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets
# Re-running the same command after a preemption resumes from the newest checkpoint.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,18p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
EXTRA_FLAGS=$(printf ' %q' "$@")
REPO_DIR=${REPO_DIR:-'~/mixmae_jax'}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
HERE=$(cd "$(dirname "$0")/.." && pwd)

gcloud_ssh() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

# 1. Ship this checkout (tracked files) to every worker.
ARCHIVE=$(mktemp -t mixmae_jax.XXXXXX.tar.gz)
git -C "$HERE" archive --format=tar.gz -o "$ARCHIVE" HEAD
gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":/tmp/mixmae_jax.tar.gz --zone="$ZONE" \
  $PROJECT_FLAG --worker=all
gcloud_ssh "mkdir -p $REPO_DIR && tar -xzf /tmp/mixmae_jax.tar.gz -C $REPO_DIR"

# 2. Install (JAX for TPU, TensorFlow CPU-only for tf.data).
if [[ -z "${SKIP_INSTALL:-}" ]]; then
  gcloud_ssh "cd $REPO_DIR && python3 -m pip install -q -U pip && python3 -m pip install -q -e '.[tpu]'"
fi

# 3. Run on all workers at once; logs go to ~/mixmae_train.log on each worker.
gcloud_ssh "cd $REPO_DIR && ${DATA_DIR:+TFDS_DATA_DIR=$DATA_DIR} nohup python3 -m mixmae_jax.train \
  --config=$CONFIG --workdir=$WORKDIR $EXTRA_FLAGS > ~/mixmae_train.log 2>&1 &"
echo "started on all workers of $TPU_NAME; follow with:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 --command='tail -f ~/mixmae_train.log'"
