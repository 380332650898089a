r"""EPIC-Kitchens (D1 / D2 / D3, 8 verbs), multi-source protocol, MBCD with the paper's recipe.

  python -m mbcd_jax.main --config=configs/epic.py --config.data.dir=/data/epic_prepared \
      --config.data.sources=D2,D3 --config.data.target=D1 --workdir=runs/epic_d1
  # Embedded synthetic EPIC-shaped benchmark (8 classes, domains D1-D3), no download:
  python -m mbcd_jax.main --config=configs/epic.py:synthetic --workdir=runs/epic_demo

Arguments after ':' as in configs/hac.py. The target domain's test split is the test set (a
property of the dataset: ``config_lib.DATASETS['epic']``).
"""
import ml_collections

from mbcd_jax.configs import hac
from mbcd_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_config_arg(arg, 'configs/epic.py')
  c = config_lib.dataset_config('epic', sources=('D2', 'D3'), target='D1')
  c.model.encoders = hac.paper_encoders()
  c.method.cmrf.sma_start_step = 400   # CMRF's README commands on EPIC-Kitchens
  if args:
    hac.apply_synthetic(c, smoke='smoke' in args, scratch='scratch' in args,
                        short='short' in args)
  return c
