"""Forwards to mbcd_jax/synthetic/world_check.py, where ``mbcd_jax.world_check`` lives now.

``python -m mbcd_jax.world_check ...`` runs that module, and ``from mbcd_jax import world_check`` is
that very module object: the commands written with the old name keep working.
"""
import runpy
import sys

if __name__ == '__main__':
  runpy.run_module('mbcd_jax.synthetic.world_check', run_name='__main__', alter_sys=True)
else:
  from mbcd_jax.synthetic import world_check as _module  # pylint: disable=g-import-not-at-top
  sys.modules[__name__] = _module
