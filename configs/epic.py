"""``--config=configs/epic.py[:arg]``: the config of mbcd_jax/configs/epic.py (see its docstring)."""
from mbcd_jax.configs.epic import *  # pylint: disable=wildcard-import,unused-wildcard-import
from mbcd_jax.configs.epic import get_config  # pylint: disable=unused-import
