#!/usr/bin/env bash
# Same runs as run.sh, ordered so that a cut study has every method: V+F+A first, seed-major.
cd /work/wt/study1
for s in 0 1 2; do
 for mods in 'video,flow,audio' 'flow,audio'; do
  JAX_COMPILATION_CACHE_DIR=/work/jaxcache JAX_PLATFORMS=cpu python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic \
    --config.train.epochs=10 --config.method.ema_beta=0.98 --config.method.cmrf.sma_start_step=20 \
    --config.train.progress=False \
    --methods=erm,rna,simmmdg,moosa,cmrf,mbcd --modalities="$mods" \
    --seeds=$s --workdir=/work/study_t1 --table=table1_seed${s}_${mods//,/_}
 done
done
echo ALLDONE
