"""Forwards to mbcd_jax/study/results_page.py, where ``mbcd_jax.results_page`` lives now.

``python -m mbcd_jax.results_page ...`` runs that module, and ``from mbcd_jax import results_page`` is
that very module object: the commands written with the old name keep working.
"""
import runpy
import sys

if __name__ == '__main__':
  runpy.run_module('mbcd_jax.study.results_page', run_name='__main__', alter_sys=True)
else:
  from mbcd_jax.study import results_page as _module  # pylint: disable=g-import-not-at-top
  sys.modules[__name__] = _module
