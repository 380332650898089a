"""Training recipes: the shared benchmark recipe, or each method's authors' per-setting one.

``config.train.recipe`` picks how long a run trains and with which per-setting coefficients:

  'shared'   the config's own values (the MMDG benchmark's recipe: 20 epochs for every method,
             setting and modality set; Adam lr 1e-4, batch 16). Nothing is changed.
  'authors'  the epochs (and, where the script's optimizer differs, the weight decay) and
             per-setting hyper-parameters of the commands in the method's
             authors' README for this dataset, modality set and target domain. The data lives
             with each method (``Extension.recipes`` of ``mbcd_jax/baselines/*.py``); MBCD, its
             ablations and ERM/EMA have none, so for them 'authors' is 'shared'.

The READMEs give commands for the multi-source protocol (leave one domain out). A run with
other source domains (single-source) takes the authors' recipe only when it is the same for
every target and modality set of its dataset (a per-dataset recipe: CMRF's, RNA-Net's); a
per-setting recipe (SimMMDG's, MOOSA's) has no command for it and the run is refused.

``apply`` is the one place a recipe is resolved; ``config_lib.normalize`` calls it (with the
method registry: this module imports nothing of the package's above it), so the
resolved epochs and coefficients are what a run's ``config.json`` records and what the
runner's ``run_config.json`` and tables see. It is idempotent: under 'authors' an explicit
``--config.train.epochs`` or method coefficient named by the recipe is replaced.
"""
from __future__ import annotations

import itertools
from typing import Sequence, TYPE_CHECKING

from mbcd_jax import MODALITIES
from mbcd_jax.errors import ConfigError

if TYPE_CHECKING:
  # For annotations only: the methods, model and step modules import this one, and must import
  # where ml_collections is not installed (benchmarks/device_check.py on a bare accelerator host).
  import ml_collections

RECIPES = ('shared', 'authors')


def modality_key(modalities: Sequence[str]) -> str:
  """('audio', 'video') -> 'video+audio': the modalities in canonical (video, flow, audio)
  order, the key the recipe tables use."""
  return '+'.join(m for m in MODALITIES if m in modalities)


def _modality_sets() -> list[tuple[str, ...]]:
  """Every multi-modal set a README can name: the pairs and the triple."""
  return [s for k in range(2, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, k)]


def resolve(extension, dataset: str, modalities: Sequence[str], sources: Sequence[str],
            target: str, domains: Sequence[str]) -> dict:
  """The authors' overrides ``{'epochs': n[, 'weight_decay': w], <hparam>: value}`` for one
  run of ``extension``.

  Raises:
    ValueError: one line naming dataset / modalities / target when there is no command.
  """
  where = (f'dataset={dataset}, modalities={modality_key(modalities)}, '
           f'sources={",".join(sources)}, target={target}')
  multi_source = set(sources) == set(domains) - {target}
  recipe = extension.recipes(dataset, tuple(modalities), target)
  if recipe is None:
    raise ConfigError(f"config.train.recipe='authors': {extension.name} has no authors' recipe "
                     f'for {where}')
  if not multi_source:
    every = [extension.recipes(dataset, m, t) for m in _modality_sets() for t in domains]
    if any(r != recipe for r in every):
      raise ConfigError(f"config.train.recipe='authors': {extension.name}'s authors' recipe is "
                       f'per multi-source setting; none for the single-source run {where}')
  return dict(recipe)


def apply(config: ml_collections.ConfigDict, extensions: dict) -> ml_collections.ConfigDict:
  """Writes the authors' recipe of ``config.method.name`` into ``config`` (in place).

  'shared', and 'authors' for a method without recipes, leave the config as it is.

  Args:
    extensions: name -> ``Extension`` (``methods.EXTENSIONS``; passed in because the methods'
      modules import this one).
  Raises:
    ConfigError: an unknown ``config.train.recipe``, or no authors' command for the setting.
  """
  recipe = config.train.recipe
  if recipe not in RECIPES:
    raise ConfigError(f'config.train.recipe must be one of {RECIPES}, got {recipe!r}')
  ext = extensions.get(config.method.name)
  if recipe == 'shared' or ext is None or ext.recipes is None:
    return config
  d = config.data
  sources = (d.sources,) if isinstance(d.sources, str) else tuple(d.sources)
  overrides = resolve(ext, d.dataset, tuple(d.modalities), sources, d.target, tuple(d.domains))
  group = config.method[ext.name]
  with config.unlocked():
    for key, value in overrides.items():
      if key == 'epochs':
        config.train.epochs = int(value)
      elif key == 'weight_decay':   # a script whose optimizer ignores its --weight_decay (JAT)
        config.optim.weight_decay = float(value)
      elif key in group:
        group[key] = value
      else:
        raise ConfigError(f"{ext.name}: authors' recipe sets {key!r}, which is neither 'epochs', "
                         f"'weight_decay' nor a key of config.method.{ext.name}")
  return config
