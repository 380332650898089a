#!/usr/bin/env bash
# One run on a Cloud TPU VM (single host or a multi-host slice): create or reuse the VM, copy
# this checkout to every worker, install, run the same command on --worker=all, pull the logs.
#
#   TPU_NAME=mbcd-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-16 \
#     WORKDIR=/mnt/gcs/runs/hac_h GCS_BUCKET=my-bucket launch/tpu_vm.sh
#   ACTION=logs TPU_NAME=mbcd-v4 ZONE=us-central2-b launch/tpu_vm.sh
#   DRY_RUN=1 TPU_NAME=t ZONE=z launch/tpu_vm.sh       # print the gcloud commands only
#
# Multi-host: every worker runs `python3 -m mbcd_jax.main` with MBCD_DISTRIBUTED=auto, so
# jax.distributed.initialize() finds the slice's workers itself (mbcd_jax/distributed.py). All
# workers take part in each checkpoint, so WORKDIR must be storage they share: set GCS_BUCKET
# to mount gs://$GCS_BUCKET at /mnt/gcs on every worker (gcsfuse), or use a Filestore mount.
# Spot/preemptible VMs (SPOT=1): on preemption the run checkpoints (SIGTERM, exit 75) or the VM
# disappears; the script then recreates the VM and re-runs the same command, which resumes
# (MAX_RESTARTS times).
#
# Variables:
#   TPU_NAME          TPU VM name                                    (required)
#   ZONE              zone                                           (required)
#   PROJECT           GCP project                                   (gcloud's default)
#   ACCELERATOR_TYPE  e.g. v4-8 (1 host), v4-16 (2 hosts), v5litepod-8 (v4-8)
#   RUNTIME_VERSION   TPU VM image                                   (tpu-ubuntu2204-base)
#   SPOT              1: create a spot VM                            (0)
#   ACTION            all | create | setup | run | logs | delete     (all = create+setup+run+logs)
#   CONFIG            config file[:arg]                              (configs/hac.py:synthetic)
#   WORKDIR           run directory shared by the workers           (/mnt/gcs/runs/tpu)
#   EXTRA_ARGS        more mbcd_jax.main flags, one string           ('')
#   GCS_BUCKET        bucket to mount at /mnt/gcs (gcsfuse)          ('': no mount)
#   REMOTE_DIR        code directory on the workers                 (mbcd_jax, under ~)
#   LOG_DIR           where logs are pulled to                       (logs/$TPU_NAME)
#   MAX_RESTARTS      recreate-and-resume attempts after preemption  (10)
#   DRY_RUN           1: print the commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
SPOT="${SPOT:-0}"
ACTION="${ACTION:-all}"
CONFIG="${CONFIG:-configs/hac.py:synthetic}"
WORKDIR="${WORKDIR:-/mnt/gcs/runs/tpu}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
GCS_BUCKET="${GCS_BUCKET:-}"
REMOTE_DIR="${REMOTE_DIR:-mbcd_jax}"
LOG_DIR="${LOG_DIR:-logs/$TPU_NAME}"
MAX_RESTARTS="${MAX_RESTARTS:-10}"
gc=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then where+=(--project="$PROJECT"); fi

state() {   # READY, PREEMPTED, ... or NONE
  if [[ "$DRY_RUN" == 1 ]]; then echo NONE; return; fi
  "${gc[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(state)' 2>/dev/null || echo NONE
}

create() {
  local s; s="$(state)"
  if [[ "$s" == READY ]]; then echo "tpu_vm.sh: reusing $TPU_NAME" >&2; return; fi
  if [[ "$s" != NONE ]]; then   # PREEMPTED / TERMINATED spot VMs cannot restart: recreate
    run "${gc[@]}" delete "$TPU_NAME" "${where[@]}" --quiet
  fi
  local spot=(); if [[ "$SPOT" == 1 ]]; then spot=(--spot); fi
  run "${gc[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" "${spot[@]}"
}

setup() {
  local tgz=/tmp/mbcd_jax_$$.tgz
  # The committed tree plus uncommitted changes to tracked files (what you are running now).
  run bash -c "git ls-files -z | tar --null -czf $tgz -T -"
  run "${gc[@]}" scp "$tgz" "$TPU_NAME:~/mbcd_jax.tgz" "${where[@]}" --worker=all
  local mount=":"
  if [[ -n "$GCS_BUCKET" ]]; then
    mount="(mountpoint -q /mnt/gcs || (sudo mkdir -p /mnt/gcs && sudo chown \$USER /mnt/gcs \
&& gcsfuse --implicit-dirs $GCS_BUCKET /mnt/gcs))"
  fi
  run "${gc[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command \
    "set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/mbcd_jax.tgz -C ~/$REMOTE_DIR && \
pip install -q -U 'jax[tpu]' -r ~/$REMOTE_DIR/requirements.txt && $mount"
}

run_job() {   # returns the exit code of worker 0's run
  local q; q="$(printf ' %q' "--config=$CONFIG" "--workdir=$WORKDIR")"
  run "${gc[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command \
    "cd ~/$REMOTE_DIR && MBCD_DISTRIBUTED=auto python3 -m mbcd_jax.main$q $EXTRA_ARGS \
> ~/mbcd_run.log 2>&1; echo \$? > ~/mbcd_run.rc" || true
  if [[ "$DRY_RUN" == 1 ]]; then return 0; fi
  local rc
  rc="$("${gc[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=0 --command 'cat ~/mbcd_run.rc' \
        2>/dev/null || echo "$EXIT_PREEMPTED")"   # VM gone: treat as preempted
  return "${rc:-1}"
}

logs() {
  run mkdir -p "$LOG_DIR"
  local n=1
  case "$ACCELERATOR_TYPE" in  # workers = chips / 4 (v4/v5p: 2 cores per chip, 4 chips a host)
    v4-*|v5p-*) n=$(( ${ACCELERATOR_TYPE#*-} / 8 )); (( n >= 1 )) || n=1 ;;
    v5litepod-*|v6e-*) n=$(( ${ACCELERATOR_TYPE#*-} / 8 )); (( n >= 1 )) || n=1 ;;
  esac
  for ((w = 0; w < n; w++)); do
    run "${gc[@]}" scp "$TPU_NAME:~/mbcd_run.log" "$LOG_DIR/worker$w.log" "${where[@]}" \
      --worker="$w" || true
  done
  echo "tpu_vm.sh: logs in $LOG_DIR; metrics and checkpoints in $WORKDIR" >&2
}

case "$ACTION" in
  create) create ;;
  setup) setup ;;
  run) run_job ;;
  logs) logs ;;
  delete) run "${gc[@]}" delete "$TPU_NAME" "${where[@]}" --quiet ;;
  all)
    attempt=0
    while true; do
      create
      setup
      rc=0; run_job || rc=$?
      logs
      if [[ $rc -eq $EXIT_PREEMPTED && $attempt -lt $MAX_RESTARTS ]]; then
        attempt=$((attempt + 1))
        echo "tpu_vm.sh: preempted, recreating and resuming ($attempt of $MAX_RESTARTS)" >&2
        continue
      fi
      exit $rc
    done ;;
  *) echo "tpu_vm.sh: unknown ACTION=$ACTION (all|create|setup|run|logs|delete)" >&2; exit 2 ;;
esac
