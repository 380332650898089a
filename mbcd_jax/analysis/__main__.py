r"""Command line for the analyses (paper Figs. 1, 3, 4, 5):

  python -m mbcd_jax.analysis modality|robustness|flatness|missing|all \
      --config=configs/hac.py:synthetic --methods=erm,ema,mbcd --workdir=runs/study \
      --out=docs/study [--checkpoint=last|best] [--config.train.epochs=10 ...]
  python -m mbcd_jax.analysis curves --workdir=runs/study --methods=erm,ema,mbcd \
      --target=human --out=docs/study

and the MMDG benchmark's reliability suites over every finished run of a study
(``suites.py``; docs/reliability.md):

  python -m mbcd_jax.analysis misd|ood|missing|corruption --workdir=runs/study \
      [--methods=erm,mbcd] [--who=student] [--ood_dir=...] [--noise_wav=...] [--hac_c=...]

``--workdir`` is a study directory of ``mbcd_jax.study.experiments`` (its layout
``<variant>/<modalities>/<sources>_to_<target>/seed<k>/``): the model-based analyses load each
method's run for the config's modalities, domains and seed from its checkpoint (``--checkpoint``:
the end-of-training one, or the best-validation one) and compare the methods on the same target
domain and seed. A method with no finished run there is trained first, as the runner would
(``common.load_study``); re-running the command trains nothing. The suites only read finished
runs (all methods unless ``--methods`` is given); ``missing`` with ``--config`` also writes the
single-modality missing.json / missing.png of the config's runs.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from mbcd_jax.analysis import common, curves, flatness, missing, modality, robustness, suites

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
_WHO = flags.DEFINE_enum('who', 'evaluated', ['evaluated', 'student', 'teacher'],
                         "Suites: the model scored (default each method's evaluated one).")
_OOD_DIR = flags.DEFINE_string('ood_dir', None, 'ood: a prepared store of the other dataset '
                               '(EPIC for HAC runs, HAC for EPIC runs).')
_OOD_DOMAINS = flags.DEFINE_list('ood_domains', [], 'ood: its domains (default EPIC D1; HAC all).')
_NOISE_WAV = flags.DEFINE_string('noise_wav', None, 'corruption: a noise recording (16-bit wav) '
                                 "for the audio 'wind' overlay; default Gaussian noise by SNR.")
_HAC_C = flags.DEFINE_string('hac_c', None, 'corruption: a pre-generated HAC-C tree (HAC runs).')
_SEVERITIES = flags.DEFINE_list('severities', ['1', '2', '3', '4', '5'], 'corruption severities.')
_SCORES = flags.DEFINE_list('scores', list(suites.reliability.SCORES), 'misd / ood scores.')
_LIMIT = flags.DEFINE_integer('limit', None, 'Suites: at most this many eval batches per '
                              'condition (a quick look).')
_RECOMPUTE = flags.DEFINE_bool('recompute', False, "Suites: evaluate every run again instead "
                                "of reusing the rows kept beside it (suites.py).")
USAGE = (*MODEL_ANALYSES, 'curves', 'all', *(s for s in suites.SUITES if s != 'missing'))


def run_suite(what: str, out: str):
  opts = suites.Options(scores=tuple(_SCORES.value), ood_dir=_OOD_DIR.value,
                        ood_domains=tuple(_OOD_DOMAINS.value), noise_wav=_NOISE_WAV.value,
                        hac_c=_HAC_C.value, severities=tuple(int(s) for s in _SEVERITIES.value),
                        limit=_LIMIT.value)
  methods = [m for m in _METHODS.value.split(',') if m] if _METHODS.present else None
  suites.run(what, _WORKDIR.value, out, methods, _CHECKPOINT.value,
             None if _WHO.value == 'evaluated' else _WHO.value, opts, recompute=_RECOMPUTE.value)


def main(argv):
  if len(argv) != 2 or argv[1] not in USAGE:
    raise app.UsageError(f'usage: python -m mbcd_jax.analysis {{{"|".join(USAGE)}}} --flags')
  what = argv[1]
  out = _OUT.value or _WORKDIR.value
  os.makedirs(out, exist_ok=True)
  methods = [m for m in _METHODS.value.split(',') if m]
  if what in suites.SUITES and (what != 'missing' or _CONFIG.value is None):
    run_suite(what, out)
    print(f'written to {out}')
    return
  if what == 'curves':
    curves.run(_WORKDIR.value, methods, out, _TARGET.value)
    return
  trained = common.load_study(_CONFIG.value, _WORKDIR.value, methods, _CHECKPOINT.value)
  for name, mod in MODEL_ANALYSES.items():
    if what in (name, 'all'):
      print(f'{name} ...')
      mod.run(trained, out)
  if what == 'missing':
    run_suite(what, out)
  print(f'written to {out}')


if __name__ == '__main__':
  app.run(main)
