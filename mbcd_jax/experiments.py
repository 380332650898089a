"""Forwards to mbcd_jax/study/experiments.py, where ``mbcd_jax.experiments`` lives now.

``python -m mbcd_jax.experiments ...`` runs that module, and ``from mbcd_jax import experiments`` is
that very module object: the commands written with the old name keep working.
"""
import runpy
import sys

if __name__ == '__main__':
  runpy.run_module('mbcd_jax.study.experiments', run_name='__main__', alter_sys=True)
else:
  from mbcd_jax.study import experiments as _module  # pylint: disable=g-import-not-at-top
  sys.modules[__name__] = _module
