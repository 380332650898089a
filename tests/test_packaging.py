"""pyproject.toml reads the requirement files as the package's dependencies: every line must be
a plain requirement (setuptools rejects pip options and trailing comments there), and the
packages the configs and CLIs need must be the ones installed."""
import os
import tomllib

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from conftest import ROOT


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


@pytest.mark.parametrize('name', ['requirements.txt', 'requirements-dev.txt'])
def test_requirement_files_are_plain_requirements(name):
  with open(os.path.join(ROOT, name)) as f:
    lines = [l.strip() for l in f if l.strip() and not l.strip().startswith('#')]
  assert lines
  for line in lines:
    try:
      Requirement(line)
    except InvalidRequirement as e:
      pytest.fail(f'{name}: {line!r} is not a plain requirement ({e}); pyproject.toml reads '
                  'this file, so put comments on their own line and no pip options')


def test_pyproject_reads_the_requirement_files_and_ships_the_configs_in_the_package():
  p = _pyproject()
  dyn = p['tool']['setuptools']['dynamic']
  assert dyn['dependencies']['file'] == ['requirements.txt']
  assert dyn['optional-dependencies']['dev']['file'] == ['requirements-dev.txt']
  include = p['tool']['setuptools']['packages']['find']['include']
  # The configs ship inside the package; no top-level `configs` module lands in site-packages.
  assert set(include) == {'mbcd_jax', 'mbcd_jax.*'}
  assert os.path.exists(os.path.join(ROOT, 'mbcd_jax', 'configs', '__init__.py'))


@pytest.mark.parametrize('name', ['hac', 'epic'])
def test_the_clones_configs_are_the_packages(name):
  """``--config=configs/<name>.py`` (a clone) and ``mbcd_jax/configs/<name>.py`` (installed)
  give the same config, and the clone's file sets no key of its own."""
  import importlib  # pylint: disable=g-import-not-at-top
  clone = importlib.import_module(f'configs.{name}')
  package = importlib.import_module(f'mbcd_jax.configs.{name}')
  assert clone.get_config is package.get_config
  for arg in (None, 'synthetic', 'smoke'):
    assert clone.get_config(arg).to_dict() == package.get_config(arg).to_dict()
  with open(os.path.join(ROOT, 'configs', f'{name}.py')) as f:
    assert 'ml_collections' not in f.read()
