"""``--config=configs/hac.py[:arg]``: the config of mbcd_jax/configs/hac.py (see its docstring)."""
from mbcd_jax.configs.hac import *  # pylint: disable=wildcard-import,unused-wildcard-import
from mbcd_jax.configs.hac import get_config  # pylint: disable=unused-import
