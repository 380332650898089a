#!/usr/bin/env bash
# The paper-regime embedded study (docs/benchmark.md): erm / ema / mbcd on the default
# benchmark (upstream-pretrained BN encoders, Adam 1e-4, wd 1e-4, batch 16, alpha 1e-4,
# lambda 1), multi-source, all three targets. The 400-step phases (beta 0.995) run
# configs/hac.py:synthetic,short, the default when they were made; the long* phases the
# paper's 2000 steps, beta 0.999 (configs/hac.py:synthetic, the default since).
# Re-running skips finished runs. Run from the repo root.
#   PHASE=w0|w2|w34|long|long3|long_w2|long_w345|long_w3ema|long_table4|long_components|long_analysis|long_s1|long_s234|long_amd3|long_balanced|long_w6|long_loo1|long_w345b|long_sweeps|long_noamd1|long_fixed1|long_beta1|long_lambda1|long_t4s1|w0s12|w0s34|w5|w6|table4|components|sweeps|analysis|all
#                         world 0 (the default world) | world 2 | worlds 3 and 4 (world
#                         seeds used in no choice; 3 and 4 fixed before any of their output was
#                         seen) | the paper's run length on world 0, A,C->H, seed 0: 100 epochs =
#                         2000 steps with beta 0.999 (the teacher-lag question) | w0s12: seeds 1
#                         and 2 of world 0 in their own workdir
#                         | w5: world 5 seed 0 (chosen before any of its output existed)
#                         | long3: the paper's length on all three targets of world 0 (adds H,C->A
#                         and H,A->C to PHASE=long's workdir)
#                         | long_w2: the paper's length on world 2, erm and mbcd, all targets
#                         | long_w345: the same on worlds 3, 4, 5 (plan addendum 4), then
#                         | long_w3ema: ema on world 3 at the paper's length
#                         | long_table4: Table 4 rows at the paper's length, world 0, seed 0,
#                         in $OUT/long (plan item 13)
#                         | long_components: leave-one-out and Table 5 rows at the paper's
#                         length, world 0, seed 0, in $OUT/long (plan addendum 6)
#                         | long_analysis: the four model-based analyses and the curves on
#                         $OUT/long's A,C->H runs (erm, ema, ema_amd, mbcd), into $OUT/long_analyses
#                         | long_s1: world 0, seed 1, erm / ema / mbcd at the paper's length,
#                         one target at a time, then ema_amd; table over seeds 0-1 (plan
#                         addendum 8)
#                         | long_s234: seeds 2, 3, 4 of world 0 the same way (erm / ema / mbcd,
#                         seed by seed, target by target), a table over the seeds done after each
#                         seed, then ema_amd on seed 2 (plan addendum 9)
#                         | long_amd3: ema_amd on seed 3 of world 0, with tables of the four
#                         methods over seeds 0-2 and 0-3 (plan addendum 10)
#                         | long_balanced: the balanced control (dominance 1) for erm and mbcd,
#                         world 0, seed 0, beside the default's dominance 2 (plan addendum 11)
#                         | long_w6: world 6 (never run before) at the paper's length, seed 0,
#                         erm / ema / mbcd one target at a time, then ema_amd (plan addendum 13)
#                         | long_loo1: leave-one-out rows without distillation, then without GCC,
#                         world 0, seed 1, one target at a time (plan addendum 14)
#                         | long_w345b: worlds 3, 4, 5 on this machine, erm / ema / mbcd, seed 0,
#                         world by world, one target at a time, then ema_amd on world 3
#                         (plan addendum 15)
#                         | long_sweeps: the lambda and beta sweeps at the paper's length, mbcd,
#                         world 0, seed 0, one target at a time (plan addendum 17)
#                         | long_noamd1: mbcd without AMD on world 0, seed 1, one target at a
#                         time, then the leave-one-out rows over seeds 0-1 (plan addendum 19)
#                         | long_fixed1: mbcd with fixed dropout 0.5 on world 0, seed 1, one
#                         target at a time, then Table 5 over seeds 0-1 (plan addendum 20)
#                         | long_beta1: mbcd at beta 0.99 on world 0, seed 1, one target at a
#                         time, then the beta table over seeds 0-1 (plan addendum 21)
#                         | long_lambda1: mbcd at lambda 0.1 on world 0, seed 1, one target at
#                         a time, then the lambda table over seeds 0-1 (plan addendum 22)
#                         | long_t4s1: Table 4's ema_gcc and ema_dl rows on world 0, seed 1, one
#                         target at a time, then Table 4 over seeds 0-1 (plan addendum 23)
#                         | w0s34: seeds 3 and 4 of world 0 (with w0s12 and seed 0: 5 seeds)
#                         | w6: world 6 seed 0 (chosen with w5)
#                         | components: Table 5 and leave-one-out rows, world 0 seed 0, in $T1
#                         | sweeps: the beta and lambda sweeps at 400 steps, world 0 seed 0, in $T1
#                         | analysis: the four model analyses and the curves on erm / ema / mbcd,
#                         A,C->H, world 0, seed 0, last checkpoint, from $T1 (into analyses/ here)
#                         | table4: the Table 4 rows (ema, +AMD, +GCC, +DL) on world 0, seed 0, in
#                         $T1 (default runs/table1_paper, the paper-regime Table 1 workdir, whose
#                         erm and mbcd runs the grid reuses)
#   PARALLEL=runs at a time (default 2)
# To stop a phase, signal its process group (kill -- -<pgid>, e.g. the pid of a `setsid` or
# `set -m` launch): a SIGTERM to this shell alone ends it at once and leaves the running training
# process going. A stopped run resumes from its last checkpoint when the phase is re-run.
set -u
PHASE=${PHASE:-all}
P=${PARALLEL:-2}
OUT=${OUT:-runs/paper_regime}
on() { [[ $PHASE == "$1" || $PHASE == all ]]; }
S=configs/hac.py:synthetic,short   # 400 steps, beta 0.995
X="python -m mbcd_jax.study.experiments --config=$S --methods=erm,ema,mbcd --parallel=$P"
# The paper's length (the default of configs/hac.py:synthetic; the flags say it explicitly).
XL="python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --parallel=$P"
t0=$(date +%s)
T0="Paper regime, world 0 (default), multi-source, V+F+A"
T2="Paper regime, world 2 (no part in any choice), multi-source, V+F+A"
W2="--config.data.synthetic.world_seed=2"
T3="Paper regime, world 3 (no part in any choice), multi-source, V+F+A"
T4="Paper regime, world 4 (no part in any choice), multi-source, V+F+A"
LONG="--config.train.epochs=100 --config.method.ema_beta=0.999"   # the paper's length
TL="Paper regime at the paper's length (2000 steps, beta 0.999)"
# Where a world's paper-length runs live: world 0 in $OUT/long, world w in $OUT/long_w<w>.
world() { if (( $1 )); then echo "--workdir=$OUT/long_w$1 --config.data.synthetic.world_seed=$1"
  else echo "--workdir=$OUT/long"; fi; }
# An ablation grid on world 0, seed 0, in the Table 1 workdir: grid() <grid> <title suffix>
grid() { python -m mbcd_jax.study.experiments --config=$S --grid=$1 --seeds=0 \
  --parallel=$P --workdir=${T1:-runs/table1_paper} --table=$1_seed0 \
  --title="Paper regime, world 0, seed 0: $2"; }
# Seed 0 on both worlds first, so that a cut study has both.
if on w0; then $X --workdir=$OUT/w0 --seeds=0 --title="$T0"; fi
# World 2 first on one target (one erm / ema / mbcd triple), then all three.
if on w2; then $X --workdir=$OUT/w2 --seeds=0 --targets=human $W2 --title="$T2"; fi
if on w2; then $X --workdir=$OUT/w2 --seeds=0 $W2 --title="$T2"; fi
# Worlds 3 and 4, seed 0: the same table on two more independent worlds.
if on w34; then $X --workdir=$OUT/w3 --seeds=0 --config.data.synthetic.world_seed=3 --title="$T3"; fi
if on w34; then $X --workdir=$OUT/w4 --seeds=0 --config.data.synthetic.world_seed=4 --title="$T4"; fi
if on long; then $XL --methods=erm,ema,mbcd --workdir=$OUT/long --seeds=0 --targets=human $LONG \
  --title="$TL, world 0"; fi
if on table4; then grid table4 "Table 4 rows"; fi
for g in table5 leave_one_out; do if on components; then grid $g $g; fi; done
for g in sweep_beta sweep_lambda; do if on sweeps; then grid $g "$g (400 steps)"; fi; done
if on w0s34; then $X --workdir=$OUT/w0s34 --seeds=3,4 --title="Paper regime, world 0 (default), seeds 3-4"; fi
if on w6; then $X --workdir=$OUT/w6 --seeds=0 --config.data.synthetic.world_seed=6 \
  --title="Paper regime, world 6 (no part in any choice), multi-source, V+F+A"; fi
if on analysis; then
  python -m mbcd_jax.analysis all --config=$S --methods=erm,ema,mbcd \
    --workdir=${T1:-runs/table1_paper} --out=docs/study/paper_regime/analyses
  python -m mbcd_jax.analysis curves --workdir=${T1:-runs/table1_paper} --methods=erm,ema,mbcd \
    --target=human --out=docs/study/paper_regime/analyses
fi
if on long3; then $XL --methods=erm,ema,mbcd --workdir=$OUT/long --seeds=0 $LONG \
  --title="$TL, world 0"; fi
if on long_w2; then $XL --methods=erm,mbcd --seeds=0 $(world 2) $LONG \
  --title="$TL, world 2"; fi
# Worlds 3, 4, 5 in this order (a cut run keeps whole worlds), then ema on world 3.
for w in 3 4 5; do if on long_w345; then $XL --methods=erm,mbcd --seeds=0 $(world $w) $LONG \
  --title="$TL, world $w"; fi; done
if on long_table4; then $XL --grid=table4 --seeds=0 --workdir=$OUT/long $LONG --table=table4_seed0 \
  --title="$TL, world 0, seed 0: Table 4 rows"; fi
for g in leave_one_out table5; do if on long_components; then $XL --grid=$g --seeds=0 \
  --workdir=$OUT/long $LONG --table=${g}_seed0 --title="$TL, world 0, seed 0: $g"; fi; done
if on long_analysis; then python -m mbcd_jax.analysis all --config=configs/hac.py:synthetic $LONG \
  --methods=erm,ema,ema_amd,mbcd --workdir=$OUT/long --out=$OUT/long_analyses
  python -m mbcd_jax.analysis curves --workdir=$OUT/long --methods=erm,ema,ema_amd,mbcd \
    --target=human --out=$OUT/long_analyses; fi
# One seed of a world (default 0) at the paper's length, one target at a time (a cut run keeps
# whole targets): per_target <methods> <seed> <table prefix> [world]
per_target() { for t in human animal cartoon; do $XL --methods=$1 --seeds=$2 $(world ${4:-0}) \
  --targets=$t $LONG --table=$3$t --title="$TL, world ${4:-0}, seed $2"; done; }
# One grid over the three targets, one at a time (a cut run keeps whole targets), a table per
# target: grid_per_target <grid flags> <table prefix> <title>
grid_per_target() { for t in human animal cartoon; do $XL $1 --targets=$t --table=$2$t --title="$3"; done; }
# A table over finished runs, nothing trained: over_seeds <methods> <seeds> <table> <title> [world]
over_seeds() { $XL --methods=$1 --seeds=$2 $(world ${5:-0}) $LONG --tables_only --table=$3 \
  --title="$TL, world ${5:-0}, $4"; }
# Seed 1, then ema_amd (droppable); one table over seeds 0-1.
if on long_s1; then per_target erm,ema,mbcd 1 s1_; per_target ema_amd 1 s1_ema_amd_
  over_seeds erm,ema,mbcd,ema_amd 0,1 w0_seeds01 "seeds 0-1"; fi
# Seeds 2-4 seed by seed (a cut run keeps whole seeds), a table over the seeds done after each,
# then ema_amd on seed 2 (droppable).
if on long_s234; then done_seeds=0,1
  for s in 2 3 4; do per_target erm,ema,mbcd $s s${s}_; done_seeds=$done_seeds,$s
    over_seeds erm,ema,mbcd $done_seeds w0_seeds${done_seeds//,/} "seeds ${done_seeds//,/ }"; done
  per_target ema_amd 2 s2_ema_amd_; fi
# The balanced control (plan addendum 11): erm and mbcd at dominance 1 on seed 0, one target at
# a time; the dominance-2 rows are the finished seed-0 runs.
BAL="--grid=imbalance --methods=erm,mbcd --values=1,2 --seeds=0 --workdir=$OUT/long $LONG"
TB="$TL, world 0, seed 0: balanced control (dominance 1 vs 2)"
if on long_balanced; then grid_per_target "$BAL" balanced_seed0_ "$TB"
  $XL $BAL --tables_only --table=balanced_seed0 --title="$TB"; fi
# ema_amd on seed 3 (plan addendum 10, droppable), with a table of the four methods over seeds
# 0-2 first (all four ran there once PHASE=long_s234 is done) and over seeds 0-3 after.
if on long_amd3; then
  over_seeds erm,ema,mbcd,ema_amd 0,1,2 w0_amd_seeds012 "seeds 0 1 2, with EMA + AMD"
  per_target ema_amd 3 s3_ema_amd_
  over_seeds erm,ema,mbcd,ema_amd 0,1,2,3 w0_amd_seeds0123 "seeds 0 1 2 3, with EMA + AMD"; fi
# World 6 (plan addendum 13): the main table target by target, then ema_amd, then one table.
if on long_w6; then per_target erm,ema,mbcd 0 w6_erm_ema_mbcd_ 6; per_target ema_amd 0 w6_ema_amd_ 6
  over_seeds erm,ema,mbcd,ema_amd 0 w6_results "seed 0" 6; fi
# Two leave-one-out rows on seed 1 (plan addendum 14), then a table beside mbcd and ema_amd.
if on long_loo1; then per_target mbcd_no_dl 1 s1_no_dl_; per_target mbcd_no_gcc 1 s1_no_gcc_
  over_seeds mbcd,mbcd_no_dl,mbcd_no_gcc,ema_amd 0,1 w0_loo_seeds01 "seeds 0-1, leave-one-out"; fi
# Worlds 3-5 again, on another machine than long_w345 (plan addendum 15): the main table world by
# world (a cut run keeps whole worlds), a table after each; then ema_amd on world 3 (droppable).
if on long_w345b; then for w in 3 4 5; do per_target erm,ema,mbcd 0 w${w}_erm_ema_mbcd_ $w
    over_seeds erm,ema,mbcd 0 w${w}_results "seed 0" $w; done
  per_target ema_amd 0 w3_ema_amd_ 3; over_seeds erm,ema,mbcd,ema_amd 0 w3_results "seed 0" 3; fi
# The lambda and beta sweeps at the paper's length (plan addendum 17): mbcd, world 0, seed 0,
# target by target (a cut run keeps whole targets): lambda 0.1, 0.5, 2, then beta 0.99, 0.995
# (lambda 1 and beta 0.999 are the finished mbcd runs, reused by run directory); after each
# target, one table per sweep over the targets done.
SWL="--grid=sweep_lambda --values=0.1,0.5,1,2 --seeds=0 $(world 0) $LONG"
SWB="--grid=sweep_beta --values=0.99,0.995,0.999 --seeds=0 $(world 0) $LONG"
if on long_sweeps; then for t in human animal cartoon; do
    $XL $SWL --targets=$t --table=sweep_lambda_seed0_$t --title="$TL, world 0, seed 0: lambda"
    $XL $SWB --targets=$t --table=sweep_beta_seed0_$t --title="$TL, world 0, seed 0: beta"
    $XL $SWL --tables_only --table=sweep_lambda_seed0 --title="$TL, world 0, seed 0: lambda"
    $XL $SWB --tables_only --table=sweep_beta_seed0 --title="$TL, world 0, seed 0: beta"; done; fi
# The third leave-one-out row on seed 1 (plan addendum 19), then all three beside mbcd and ema_amd.
if on long_noamd1; then per_target mbcd_no_amd 1 s1_no_amd_
  over_seeds mbcd,mbcd_no_amd,mbcd_no_gcc,mbcd_no_dl,ema_amd 0,1 w0_loo3_seeds01 \
    "seeds 0-1, leave-one-out"; fi
# Table 5's fixed-dropout row on seed 1 (plan addendum 20), then Table 5 over seeds 0-1.
if on long_fixed1; then per_target mbcd_fixed_dropout 1 s1_fixed_
  over_seeds mbcd_no_amd,mbcd_fixed_dropout,mbcd 0,1 w0_table5_seeds01 "seeds 0-1, Table 5"; fi
# Beta 0.99 on seed 1 (plan addendum 21) beside seed 1's beta-0.999 mbcd runs, then seeds 0-1.
SWB1="--grid=sweep_beta --values=0.99,0.999 $(world 0) $LONG"
if on long_beta1; then grid_per_target "$SWB1 --seeds=1" s1_beta_ "$TL, world 0, seed 1: beta"
  $XL $SWB1 --seeds=0,1 --tables_only --table=w0_beta_seeds01 --title="$TL, world 0, seeds 0-1: beta"; fi
# Lambda 0.1 on seed 1 (plan addendum 22) beside seed 1's lambda-1 mbcd runs, then seeds 0-1.
SWL1="--grid=sweep_lambda --values=0.1,1 $(world 0) $LONG"
if on long_lambda1; then grid_per_target "$SWL1 --seeds=1" s1_lambda_ "$TL, world 0, seed 1: lambda"
  $XL $SWL1 --seeds=0,1 --tables_only --table=w0_lambda_seeds01 --title="$TL, world 0, seeds 0-1: lambda"; fi
# Table 4's single-component rows GCC and DL on seed 1 (plan addendum 23), then Table 4 over seeds 0-1.
if on long_t4s1; then per_target ema_gcc,ema_dl 1 s1_t4_
  over_seeds erm,ema,ema_amd,ema_gcc,ema_dl,mbcd 0,1 w0_table4_seeds01 "seeds 0-1, Table 4"; fi
if on long_w3ema; then $XL --methods=erm,ema,mbcd --seeds=0 $(world 3) $LONG \
  --title="$TL, world 3"; fi
if on w0s12; then $X --workdir=$OUT/w0s12 --seeds=1,2 --title="Paper regime, world 0 (default), seeds 1-2"; fi
if on w5; then $X --workdir=$OUT/w5 --seeds=0 --config.data.synthetic.world_seed=5 \
  --title="Paper regime, world 5 (no part in any choice), multi-source, V+F+A"; fi
if on w0; then $X --workdir=$OUT/w0 --seeds=0,1 --title="$T0"; fi
if on w2; then $X --workdir=$OUT/w2 --seeds=0,1 $W2 --title="$T2"; fi
if on w0; then $X --workdir=$OUT/w0 --seeds=0,1,2 --title="$T0"; fi
echo "phase $PHASE wall time: $(( $(date +%s) - t0 )) s"
