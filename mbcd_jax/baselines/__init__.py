"""The paper's baseline methods, one module each: their extra parameters and loss terms.

``rna`` (RNA-Net), ``simmmdg``, ``moosa``, ``cmrf``: pure loss pieces checked against their
authors' code (``benchmarks/baselines_harness_*.py``), each ending with the ``EXTENSION`` that
plugs it into the shared train step (``mbcd_jax/extensions.py``; registry
``methods.EXTENSIONS``; ``--config.method.name=<module>``).
"""
