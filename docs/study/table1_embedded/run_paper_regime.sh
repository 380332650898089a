#!/usr/bin/env bash
# Embedded Table 1 in the paper's regime (plan_paper_regime.md). Run from the repo root:
#   OUT=runs/table1_paper PARALLEL=2 bash docs/study/table1_embedded/run_paper_regime.sh
# (400 steps, beta 0.995: `:synthetic,short`, the default when these runs were made.)
# Re-running skips finished runs. The upstream-pretrained encoders come from the cache
# ($MBCD_JAX_PRETRAIN_CACHE, else ~/.cache/mbcd_jax/pretrain; made on first use).
set -u
OUT=${OUT:-runs/table1_paper}
P=${PARALLEL:-2}
SEEDS=${SEEDS:-0}
# BN_PORT=1: instead, the methods in $BN_PORT_METHODS (default erm,simmmdg) with every encoder BN
# in training mode (--config.model.bn_mode=port, the peers' and the port's semantics), in
# $OUT/bn_port (plan_paper_regime.md, addendum).
if [[ ${BN_PORT:-0} == 1 ]]; then
  for s in ${SEEDS//,/ }; do
    python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic,short \
      --methods=${BN_PORT_METHODS:-erm,simmmdg} --config.model.bn_mode=port --seeds=$s \
      --parallel=$P --workdir=$OUT/bn_port --table=table1_bn_port_seed$s \
      --title="Embedded Table 1, paper regime, bn_mode=port, world 0, V+F+A, seed $s"
  done
  exit 0
fi
for s in ${SEEDS//,/ }; do
  for methods in rna cmrf simmmdg moosa erm,mbcd; do
    python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic,short --methods=$methods \
      --seeds=$s --parallel=$P --workdir=$OUT --table=table1_seed${s}_$methods \
      --title="Embedded Table 1, paper regime, world 0, V+F+A, seed $s"
  done
done
