r"""Command line: train and evaluate one run.

  python -m mbcd_jax.main --config=configs/hac.py:synthetic --workdir=runs/demo
  python -m mbcd_jax.main --config=configs/epic.py --config.data.dir=/data/epic_prepared \
      --config.data.sources="('D2','D3')" --config.data.target=D1 --workdir=runs/epic_d1

Re-running a command with the same ``--workdir`` resumes it from its latest checkpoint
(``--config.train.resume_mode=strict|allow_changes|restart``). Multi-process: the coordinates
come from the environment (Cloud TPU VM, SLURM ``srun``, ``JAX_COORDINATOR_ADDRESS``) or from
``--coordinator_address=host:port --num_processes=N --process_id=i`` (launch/README.md).

Exit codes: 0 done; 2 a config, data, workdir or checkpoint mistake, or the workdir being
written by another run (one line on stderr; the lock's holder by pid, host and start time);
3 a non-finite loss (nan_policy='stop'; the last good checkpoint is kept);
75 preempted (SIGTERM): a checkpoint was saved, re-run the same command to resume.

On a GPU / TPU, XLA's executables are kept in a persistent compilation cache
(``~/.cache/mbcd_jax/xla``; ``--compilation_cache=off`` or a folder; ``JAX_COMPILATION_CACHE_DIR``
wins when set): compiling the paper-size step took 130 s on an H200, and a repeated command
loads it instead. CPU runs keep no cache unless asked (``--compilation_cache=<folder>``).

The logic lives in ``mbcd_jax.train`` so that notebooks can import it without flags.
"""
import os
import re
import sys

from absl import app, flags, logging

from mbcd_jax import distributed, preemption
from mbcd_jax.errors import ConfigError
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for metrics, summaries, checkpoints.')
_COORD = flags.DEFINE_string('coordinator_address', None,
                             'host:port of process 0 (multi-process runs without a cluster '
                             'environment).')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (with '
                              '--coordinator_address).')
_PID = flags.DEFINE_integer('process_id', None, 'This process\'s rank in [0, num_processes).')
_CACHE = flags.DEFINE_string('compilation_cache', 'auto',
                             "XLA's persistent compilation cache: 'auto' (~/.cache/mbcd_jax/xla "
                             "on accelerators, none on the CPU), 'off', or a folder.")
flags.mark_flags_as_required(['config', 'workdir'])
DEFAULT_CACHE = os.path.join('~', '.cache', 'mbcd_jax', 'xla')

EXIT_CONFIG, EXIT_NONFINITE = 2, 3


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.INFO)
  try:
    # Before anything touches a device: multi-host runs (TPU VMs, SLURM, explicit flags).
    distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
    _use_compilation_cache(_CACHE.value)
    from mbcd_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:
    print(f'mbcd_jax: {e}', file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  except FloatingPointError as e:
    print(f'mbcd_jax: error: {e}', file=sys.stderr)
    sys.exit(EXIT_NONFINITE)
  except (ConfigError, FileNotFoundError) as e:
    # The user's mistakes (config, data, workdir, checkpoint: mbcd_jax/errors.py): one line
    # naming the field or file. Any other error keeps its traceback.
    print(f'mbcd_jax: error: {" ".join(str(e).split())}', file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def compilation_cache_dir(setting: str, backend: str, env_dir: str | None) -> str | None:
  """The persistent cache folder for ``--compilation_cache=setting`` on ``backend``, or None
  to leave JAX's setting alone (the environment's ``JAX_COMPILATION_CACHE_DIR`` wins)."""
  if env_dir or setting == 'off':
    return None
  if setting == 'auto':
    return None if backend == 'cpu' else os.path.expanduser(DEFAULT_CACHE)
  return os.path.expanduser(setting)


def _use_compilation_cache(setting: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  path = compilation_cache_dir(setting, jax.default_backend(),
                               os.environ.get('JAX_COMPILATION_CACHE_DIR'))
  if path:
    jax.config.update('jax_compilation_cache_dir', path)
    logging.info('persistent compilation cache: %s', path)


def _parse_flags(argv):
  """absl's parser, with a wrong ``--config.x=y`` override as one line instead of a traceback.

  ml_collections applies overrides while parsing; an unknown key raises AttributeError/KeyError
  and a value of the wrong type raises TypeError/ValueError from inside the library.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    msg = str(e)
  except (AttributeError, KeyError) as e:
    detail = re.sub(r'\\n|[\\\'"]', ' ', str(e))
    msg = f'unknown config key in a --config.* override: {detail}'
  except (TypeError, ValueError) as e:
    msg = f'bad --config.* override: {e}'
  print(f'mbcd_jax: error: {" ".join(msg.split())}', file=sys.stderr)
  sys.exit(EXIT_CONFIG)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
