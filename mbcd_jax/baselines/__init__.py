"""The paper's baseline methods, one module each: their extra parameters and loss terms.

``rna`` (RNA-Net), ``simmmdg``, ``moosa``, ``cmrf``: pure loss pieces checked against their
authors' code (``benchmarks/baselines_harness_*.py``); a train step adds their terms. They are
not yet wired into ``mbcd_jax.step`` / ``mbcd_jax.methods``.
"""
