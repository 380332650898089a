r"""Command line: train and evaluate one run.

  python -m mbcd_jax.main --config=configs/hac.py:synthetic --workdir=runs/demo
  python -m mbcd_jax.main --config=configs/epic.py --config.data.dir=/data/epic_prepared \
      --config.data.sources=D2,D3 --config.data.target=D1 --workdir=runs/epic_d1

The logic lives in ``mbcd_jax.train`` so that notebooks can import it without flags.
"""
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from mbcd_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for metrics, summaries, checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.INFO)
  # Multi-host runs (TPU pods, SLURM) initialise from their environment; single host: no-op.
  if jax.process_count() == 1 and any(k in __import__('os').environ for k in (
      'JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES')):
    try:
      jax.distributed.initialize()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('jax.distributed.initialize() failed (%s); running single-process', e)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    # Config and data mistakes: one line naming the field or file, no library traceback.
    print(f'mbcd_jax: error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
