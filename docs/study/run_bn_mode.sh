#!/usr/bin/env bash
# port vs frozen BN semantics on the embedded benchmark (default world), MBCD, BN in every encoder.
# Fixed before any result: configs/hac.py:synthetic,scratch unchanged except bn=True in the three encoders;
# dsu off in both arms (isolates the BN semantics); seeds 0,1,2; all three targets; 20 epochs.
# The two arms run side by side (one run each at a time) so a cut study stays paired.
set -u
# Usage: OUT=runs bash docs/study/run_bn_mode.sh && python docs/study/bn_mode_table.py runs
mkdir -p "${OUT:-runs}"
BN="--config.model.encoders.video.bn=True --config.model.encoders.flow.bn=True --config.model.encoders.audio.bn=True --config.model.dsu=False"
for mode in frozen port; do
  JAX_PLATFORMS=cpu python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic,scratch $BN \
    --config.model.bn_mode=$mode --methods=mbcd --seeds=0,1,2 --parallel=1 \
    --workdir=${OUT:-runs}/bn_$mode --title="MBCD, bn_mode=$mode, BN encoders, default world" > ${OUT:-runs}/bn_$mode.log 2>&1 &
done
wait
