#!/usr/bin/env bash
# The embedded study (docs/study/README.md): exactly the commands that produced the tables, in
# priority order (the study was cut by the compute budget; every command skips runs that are
# already finished in $W, so re-running this script completes it). Run from the repo root.
#   PHASE=main|ablations|analysis|all (default all), PARALLEL=runs at a time (default 1)
set -u
W=${W:-runs/study}
A=${A:-runs/analysis}
OUT=${OUT:-docs/study}
PHASE=${PHASE:-all}
BASE="--config=configs/hac.py:synthetic --config.train.epochs=10 --config.method.ema_beta=0.98"
X="python -m mbcd_jax.experiments $BASE --workdir=$W --parallel=${PARALLEL:-1}"
t0=$(date +%s)
if [[ $PHASE == main || $PHASE == all ]]; then
  T="Multi-source (leave one domain out), V+F+A, synthetic HAC"
  $X --methods=erm,ema,mbcd --seeds=0,1 --title="$T"
  $X --methods=erm,ema,mbcd --seeds=0,1,2 --title="$T"
fi
if [[ $PHASE == ablations || $PHASE == all ]]; then
  $X --grid=table4 --targets=human --seeds=0,1 --title="Table 4: components (A,C→H)"
  $X --grid=imbalance --methods=erm,mbcd --values=1,2 --targets=human --seeds=0,1 \
     --title="Imbalance knob data.synthetic.dominance (1 = balanced control), A,C→H"
  $X --grid=table5 --targets=human --seeds=0,1 --title="Table 5: modality dropout (A,C→H)"
  $X --grid=leave_one_out --targets=human --seeds=0,1 --title="Leave one component out (A,C→H)"
  $X --methods=erm,mbcd --modalities='video,audio' --targets=human --seeds=0,1 \
     --table=video_audio --title="V+A only (no flow), A,C→H"
fi
if [[ $PHASE == analysis || $PHASE == all ]]; then
  # Models for the analyses: erm, ema, mbcd on A,C→H, seed 0, the study's config.
  python -m mbcd_jax.analysis all $BASE --methods=erm,ema,mbcd --workdir=$A --out=$OUT
fi
if [[ $PHASE == curves || $PHASE == all ]]; then
  python -m mbcd_jax.analysis curves --workdir=$W --methods=erm,ema,mbcd --target=human --out=$OUT
fi
echo "phase $PHASE wall time: $(( $(date +%s) - t0 )) s"
