#!/usr/bin/env bash
# Writes a grid file for launch/slurm_grid.sbatch: one run per line, targets x methods x seeds
# (leave one domain out: the sources are the other domains).
#
#   launch/make_grid.sh > grid.tsv
#   METHODS="erm mbcd" SEEDS="0 1 2" DOMAINS="D1 D2 D3" launch/make_grid.sh > epic_grid.tsv
#
# Line format (tab separated): <run name>\t<mbcd_jax.main flags>; the run directory is
# $ROOT/<run name>. Lines starting with '#' and empty lines are ignored by the job array.
#
# Variables:
#   DOMAINS  the dataset's domains                 (human animal cartoon)
#   TARGETS  held-out target domains               (all DOMAINS)
#   METHODS  method presets (mbcd_jax/methods.py)  (erm ema mbcd)
#   SEEDS    training seeds                        (0 1 2)
#   EXTRA    flags added to every line             ('')
set -euo pipefail
DOMAINS="${DOMAINS:-human animal cartoon}"
TARGETS="${TARGETS:-$DOMAINS}"
METHODS="${METHODS:-erm ema mbcd}"
SEEDS="${SEEDS:-0 1 2}"
EXTRA="${EXTRA:-}"
echo "# name	flags  (launch/make_grid.sh: DOMAINS='$DOMAINS' METHODS='$METHODS' SEEDS='$SEEDS')"
for target in $TARGETS; do
  # A Python tuple literal: ml_collections parses 'a,b' into the 1-tuple ('a,b',).
  sources=""
  for d in $DOMAINS; do
    [[ "$d" == "$target" ]] || sources="${sources:+$sources,}'$d'"
  done
  sources="($sources)"
  for method in $METHODS; do
    for seed in $SEEDS; do
      printf '%s/%s/seed%s\t--config.method.name=%s --config.data.target=%s --config.data.sources=%s --config.seed=%s%s\n' \
        "$method" "$target" "$seed" "$method" "$target" "$sources" "$seed" "${EXTRA:+ $EXTRA}"
    done
  done
done
