"""The paper's baseline methods, one module each: their extra parameters and loss terms.

``rna`` (RNA-Net), ``simmmdg``, ``moosa``, ``cmrf``, ``jat``, ``nel``: pure loss pieces checked
against their authors' code (``benchmarks/baselines_harness_*.py``), each ending with the
``EXTENSION`` that plugs it into the shared train step (``mbcd_jax/extensions.py``; registry
``methods.EXTENSIONS``; ``--config.method.name=<module>``).
"""

from mbcd_jax.encoders import batchnorm
from mbcd_jax.errors import ConfigError


ORDER = ('video', 'flow', 'audio')   # the authors' canonical modality order


def present(modalities, method: str) -> list[str]:
  """The modalities present, in ``ORDER``; one-line ConfigError for an unknown one or fewer
  than two (every pairwise term needs a pair)."""
  unknown = set(modalities) - set(ORDER)
  if unknown:
    raise ConfigError(f'{method}: unknown modalities {sorted(unknown)}; expected a subset of '
                     f'{ORDER}')
  ms = [m for m in ORDER if m in modalities]
  if len(ms) < 2:
    raise ConfigError(f'{method}: needs at least two modalities, got {ms}')
  return ms


# How every peer's own script runs the networks (their repositories: SimMMDG fbca1f0, MOOSA
# 981b0cc, CMRF 39d97f2, the MMDG benchmark's train_RNA.py, train_JAT.py, train_NEL.py), a part of each
# plug-in's model variant (``Extension.model``; docs/method.md, "How each method's networks
# run"):
#  * video and flow recognizers ``train(split == 'train')``: every BN, frozen layers included,
#    on batch statistics with its running statistics updated ('port');
#  * the VGGSound audio trunk ``audio_model.eval()`` for the whole run (SimMMDG line 316, MOOSA
#    454, CMRF 798, RNA 364): running statistics, never updated; only the audio tail (layer4)
#    trains, in train mode, from a random init (its ``strict=False`` load matches no key);
#  * no DSU (the MBCD port's addition);
#  * heads from ``nn.Linear``'s default init, the audio tail from VGGSound's (``torch_init``).
SCRIPTS_NETWORKS = (('bn_mode', batchnorm.PORT), ('eval_trunks', ('audio',)), ('dsu', False),
                    ('audio_tail_init', 'random'), ('param_init', 'torch'))


# The split-distance term of SimMMDG and MOOSA (their authors' code: negative MSE between the two
# halves of each embedding) is unbounded below. The authors train with the video and flow BN in
# training mode, which renormalises each batch; on BN's fixed running statistics the trainable
# last stage can scale its features freely and the term runs away.
SPLIT_DISTANCE_FROZEN_BN = (
    "its split-distance term is unbounded below, and with config.model.bn_mode='frozen' the "
    'trainable last stage can scale its features freely: on the embedded benchmark the term fell '
    'to about -7e4 in 400 steps and test accuracy to 20-38% (docs/study/table1_embedded/'
    "paper_regime.md); the authors' scripts train the video and flow BN in training mode, the "
    "method's own variant: leave config.model.bn_mode unset (or --config.model.bn_mode=port)")
