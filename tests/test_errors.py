"""The user's mistakes end a run with one line and exit code 2 (mbcd_jax/errors.py); any other
error, JAX's or this library's own ValueError included, keeps its traceback."""
import os
import subprocess
import sys
import textwrap

import pytest

from mbcd_jax import checkpoint, config_lib, methods
from mbcd_jax.encoders import convert
from mbcd_jax.errors import ConfigError

import _runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def _main_raising(exc: str, tmp_path) -> subprocess.CompletedProcess:
  """``python -m mbcd_jax.main`` whose training raises ``exc`` (a Python expression)."""
  code = textwrap.dedent(f'''
      import sys
      from absl import app
      from mbcd_jax import main, train
      from mbcd_jax.errors import ConfigError
      def fail(config, workdir):
        raise {exc}
      train.train_and_evaluate = fail
      sys.argv = ['main', '--config=configs/hac.py:smoke', '--workdir={tmp_path / "run"}']
      app.run(main.main, flags_parser=main._parse_flags)
  ''')
  return subprocess.run([sys.executable, '-c', code], cwd=_runs.ROOT, env=_runs.env(),
                        capture_output=True, text=True, timeout=120)


def test_a_user_mistake_is_one_line_and_exit_code_2(tmp_path):
  r = _main_raising("ConfigError('config.data.dir: no such folder /nope')", tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  assert _runs.last_line(r.stderr) == 'mbcd_jax: error: config.data.dir: no such folder /nope'


def test_an_internal_error_keeps_its_traceback(tmp_path):
  r = _main_raising("ValueError('deliberate internal error')", tmp_path)
  assert r.returncode not in (0, 2), r.stderr[-2000:]
  assert 'Traceback' in r.stderr and 'deliberate internal error' in r.stderr
  assert 'mbcd_jax: error:' not in r.stderr


@pytest.mark.parametrize('raise_it', [
    lambda: config_lib.parse_config_arg('synthetic,nope', 'configs/hac.py'),
    lambda: methods.resolve(config_lib.method_config('nope')),
    lambda: convert._check_kind('resnet9000'),   # pylint: disable=protected-access
])
def test_the_libraries_user_checks_raise_config_errors(raise_it):
  with pytest.raises(ConfigError):
    raise_it()
  assert issubclass(checkpoint.CheckpointError, ConfigError)
  assert issubclass(convert.ConversionError, ConfigError)
