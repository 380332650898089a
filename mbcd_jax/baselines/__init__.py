"""The paper's baseline methods, one module each: their extra parameters and loss terms.

``rna`` (RNA-Net), ``simmmdg``, ``moosa``, ``cmrf``: pure loss pieces checked against their
authors' code (``benchmarks/baselines_harness_*.py``), each ending with the ``EXTENSION`` that
plugs it into the shared train step (``mbcd_jax/extensions.py``; registry
``methods.EXTENSIONS``; ``--config.method.name=<module>``).
"""

ORDER = ('video', 'flow', 'audio')   # the authors' canonical modality order


def present(modalities, method: str) -> list[str]:
  """The modalities present, in ``ORDER``; one-line ValueError for an unknown one or fewer
  than two (every pairwise term needs a pair)."""
  unknown = set(modalities) - set(ORDER)
  if unknown:
    raise ValueError(f'{method}: unknown modalities {sorted(unknown)}; expected a subset of '
                     f'{ORDER}')
  ms = [m for m in ORDER if m in modalities]
  if len(ms) < 2:
    raise ValueError(f'{method}: needs at least two modalities, got {ms}')
  return ms
