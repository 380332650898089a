#!/usr/bin/env bash
# One run on this machine, data parallel over all its local devices (GPUs, TPU chips or CPU).
#
#   launch/local.sh                                   # the synthetic benchmark
#   CONFIG=configs/hac.py:synthetic WORKDIR=runs/demo launch/local.sh --config.method.name=erm
#   DRY_RUN=1 launch/local.sh                         # print the command only
#
# Variables:
#   CONFIG        config file[:arg]                (configs/hac.py:synthetic)
#   WORKDIR       run directory; re-running resumes (runs/local)
#   PYTHON        interpreter                        (python3)
#   DEVICES       restrict to these GPUs, e.g. 0,1 (CUDA_VISIBLE_DEVICES; default: all)
#   MAX_RESTARTS  re-run after a preemption (exit 75) up to this many times (0)
#   DRY_RUN       1: print the commands instead of running them
# Extra arguments are passed to mbcd_jax.main (e.g. --config.train.epochs=5).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

CONFIG="${CONFIG:-configs/hac.py:synthetic}"
WORKDIR="${WORKDIR:-runs/local}"
PYTHON="${PYTHON:-python3}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"
if [[ -n "${DEVICES:-}" ]]; then export CUDA_VISIBLE_DEVICES="$DEVICES"; fi

attempt=0
while true; do
  rc=0
  run "$PYTHON" -m mbcd_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" || rc=$?
  if [[ $rc -eq $EXIT_PREEMPTED && $attempt -lt $MAX_RESTARTS ]]; then
    attempt=$((attempt + 1))
    echo "local.sh: preempted, resuming (restart $attempt of $MAX_RESTARTS)" >&2
    continue
  fi
  exit $rc
done
