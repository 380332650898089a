r"""Command line for the analyses (paper Figs. 1, 3, 4, 5):

  python -m mbcd_jax.analysis modality|robustness|flatness|missing|all \
      --config=configs/hac.py:synthetic --methods=erm,ema,mbcd --workdir=runs/analysis \
      --out=docs/study [--config.train.epochs=10 ...]
  python -m mbcd_jax.analysis curves --workdir=runs/study --methods=erm,ema,mbcd \
      --target=human --out=docs/study

The model-based analyses train each method once with ``analysis.common.train_or_load`` (state
kept in ``<workdir>/<method>/state.msgpack``; later calls load it) and compare the methods on
the same target domain and seed (the config's ``data.target`` and ``seed``).
"""
import os

from absl import app, flags
from ml_collections import config_flags

from mbcd_jax.analysis import common, curves, flatness, missing, modality, robustness

MODEL_ANALYSES = {'modality': modality, 'robustness': robustness, 'flatness': flatness,
                  'missing': missing}
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained states (model analyses) or the '
                               "runner's study directory (curves).")
_METHODS = flags.DEFINE_string('methods', 'erm,ema,mbcd', 'Comma-separated method presets.')
_OUT = flags.DEFINE_string('out', None, 'Where plots and JSON go (default: workdir).')
_TARGET = flags.DEFINE_string('target', None, 'curves: only runs with this target domain.')


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
  trained = {}
  for m in methods:
    config = common.override(_CONFIG.value, {'method.name': m, 'train.progress': False})
    print(f'{m}: train or load {os.path.join(_WORKDIR.value, m)}')
    trained[m] = common.train_or_load(config, os.path.join(_WORKDIR.value, m), log=print)
  for name, mod in MODEL_ANALYSES.items():
    if what in (name, 'all'):
      print(f'{name} ...')
      mod.run(trained, out)
  print(f'written to {out}')


if __name__ == '__main__':
  app.run(main)
