r"""Command line for the analyses (paper Figs. 1, 3, 4, 5):

  python -m mbcd_jax.analysis modality|robustness|flatness|missing|all \
      --config=configs/hac.py:synthetic --methods=erm,ema,mbcd --workdir=runs/study \
      --out=docs/study [--checkpoint=last|best] [--config.train.epochs=10 ...]
  python -m mbcd_jax.analysis curves --workdir=runs/study --methods=erm,ema,mbcd \
      --target=human --out=docs/study

``--workdir`` is a study directory of ``mbcd_jax.experiments`` (its layout
``<variant>/<modalities>/<sources>_to_<target>/seed<k>/``): the model-based analyses load each
method's run for the config's modalities, domains and seed from its checkpoint (``--checkpoint``:
the end-of-training one, or the best-validation one) and compare the methods on the same target
domain and seed. A method with no finished run there is trained first, as the runner would
(``common.load_study``); re-running the command trains nothing.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from mbcd_jax.analysis import common, curves, flatness, missing, modality, robustness

MODEL_ANALYSES = {'modality': modality, 'robustness': robustness, 'flatness': flatness,
                  'missing': missing}
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', None, "The runner's study directory (finished runs are "
                               'loaded, missing ones trained into it).')
_METHODS = flags.DEFINE_string('methods', 'erm,ema,mbcd', 'Comma-separated method presets.')
_OUT = flags.DEFINE_string('out', None, 'Where plots and JSON go (default: workdir).')
_TARGET = flags.DEFINE_string('target', None, 'curves: only runs with this target domain.')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'last', list(common.CHECKPOINTS),
                                "Model analyses: each run's end-of-training or best-validation "
                                'checkpoint.')


def main(argv):
  if len(argv) != 2 or argv[1] not in (*MODEL_ANALYSES, 'curves', 'all'):
    raise app.UsageError(f'usage: python -m mbcd_jax.analysis '
                         f'{{{"|".join((*MODEL_ANALYSES, "curves", "all"))}}} --flags')
  what = argv[1]
  out = _OUT.value or _WORKDIR.value
  os.makedirs(out, exist_ok=True)
  methods = [m for m in _METHODS.value.split(',') if m]
  if what == 'curves':
    curves.run(_WORKDIR.value, methods, out, _TARGET.value)
    return
  trained = common.load_study(_CONFIG.value, _WORKDIR.value, methods, _CHECKPOINT.value)
  for name, mod in MODEL_ANALYSES.items():
    if what in (name, 'all'):
      print(f'{name} ...')
      mod.run(trained, out)
  print(f'written to {out}')


if __name__ == '__main__':
  app.run(main)
