"""Forwards to mbcd_jax/synthetic/pretrain.py, where ``mbcd_jax.pretrain`` lives now.

``python -m mbcd_jax.pretrain ...`` runs that module, and ``from mbcd_jax import pretrain`` is
that very module object: the commands written with the old name keep working.
"""
import runpy
import sys

if __name__ == '__main__':
  runpy.run_module('mbcd_jax.synthetic.pretrain', run_name='__main__', alter_sys=True)
else:
  from mbcd_jax.synthetic import pretrain as _module  # pylint: disable=g-import-not-at-top
  sys.modules[__name__] = _module
