#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM or pod slice: ship this working tree to every worker, install it,
# stop the run this launcher started there before (if it still runs) and start the same command
# on all of them. JAX finds the other hosts itself (no coordinator flags needed).
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
# Re-running the same command after a preemption resumes from the newest checkpoint. What is
# shipped is the working tree as it is (tracked files with their uncommitted edits, and new
# files git does not ignore), so a config edited but not committed runs as edited; the launcher
# lists such changes. A run still going from an earlier launch is sent SIGTERM (it saves a
# checkpoint and exits) and waited for, so two runs never share the workers' TPUs.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,24p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
EXTRA_FLAGS=$(printf ' %q' "$@")
REPO_DIR=${REPO_DIR:-'~/mixmae_jax'}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PID_FILE='~/mixmae_train.pid'

gcloud_ssh() {
  # shellcheck disable=SC2086
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

# 1. Stop the run an earlier launch started (SIGTERM: it checkpoints and exits; SIGKILL after
#    five minutes), so the new one finds the TPUs free.
gcloud_ssh "if [ -f $PID_FILE ] && kill -0 \$(cat $PID_FILE) 2>/dev/null; then \
  echo \"\$(hostname): stopping the earlier run (pid \$(cat $PID_FILE))\"; \
  kill -TERM \$(cat $PID_FILE); \
  for i in \$(seq 300); do kill -0 \$(cat $PID_FILE) 2>/dev/null || break; sleep 1; done; \
  kill -KILL \$(cat $PID_FILE) 2>/dev/null || true; fi; rm -f $PID_FILE"

# 2. Ship the working tree: tracked files as they are now, plus untracked ones not ignored.
CHANGES=$(git -C "$HERE" status --porcelain --untracked-files=all)
if [[ -n "$CHANGES" ]]; then
  echo "shipping the working tree of $(git -C "$HERE" rev-parse --short HEAD) with changes not" \
       "committed:"
  echo "$CHANGES" | sed 's/^/  /'
fi
ARCHIVE=$(mktemp -t mixmae_jax.XXXXXX.tar.gz)
(cd "$HERE" && git ls-files -z --cached --others --exclude-standard |
   while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
   tar -czf "$ARCHIVE" --null -T -)
# shellcheck disable=SC2086
gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":/tmp/mixmae_jax.tar.gz --zone="$ZONE" \
  $PROJECT_FLAG --worker=all
gcloud_ssh "mkdir -p $REPO_DIR && tar -xzf /tmp/mixmae_jax.tar.gz -C $REPO_DIR"

# 3. Install (JAX for TPU, TensorFlow CPU-only for tf.data).
if [[ -z "${SKIP_INSTALL:-}" ]]; then
  gcloud_ssh "cd $REPO_DIR && python3 -m pip install -q -U pip && python3 -m pip install -q -e '.[tpu,train]'"
fi

# 4. Run on all workers at once; logs go to ~/mixmae_train.log on each worker.
gcloud_ssh "cd $REPO_DIR && { ${DATA_DIR:+TFDS_DATA_DIR=$DATA_DIR} nohup python3 -m mixmae_jax.train \
  --config=$CONFIG --workdir=$WORKDIR $EXTRA_FLAGS > ~/mixmae_train.log 2>&1 < /dev/null & \
  echo \$! > $PID_FILE; }"
echo "started on all workers of $TPU_NAME; follow with:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 --command='tail -f ~/mixmae_train.log'"
echo "status: gsutil cat $WORKDIR/status.json (state running / preempted / finished / failed)"
