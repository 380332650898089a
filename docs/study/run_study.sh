#!/usr/bin/env bash
# The embedded study (docs/study/README.md): exactly the commands that produced the tables.
# Run from the repository root. Every command skips runs already finished in runs/study.
set -u
W=${W:-runs/study}
COMMON="--config=configs/hac.py:synthetic --config.train.epochs=10 --config.method.ema_beta=0.98 --workdir=$W --parallel=${PARALLEL:-2}"
X="python -m mbcd_jax.experiments $COMMON"
t0=$(date +%s)
$X --methods=erm,ema,mbcd --seeds=0,1,2 --title="Multi-source (leave one domain out), V+F+A, synthetic HAC"
$X --grid=table4 --targets=human --seeds=0,1,2 --title="Table 4: components (A,C→H)"
$X --grid=table5 --targets=human --seeds=0,1,2 --title="Table 5: modality dropout (A,C→H)"
$X --grid=leave_one_out --targets=human --seeds=0,1,2 --title="Leave one component out (A,C→H)"
$X --grid=imbalance --methods=erm,mbcd --values=1,2,3 --targets=human --seeds=0,1,2 --title="Imbalance knob data.synthetic.dominance (1 = balanced control), A,C→H"
$X --methods=erm,mbcd --modalities='video,audio' --targets=human --seeds=0,1,2 --table=video_audio --title="V+A only (no flow), A,C→H"
echo "study wall time: $(( $(date +%s) - t0 )) s"
