"""Experiment configs, one module per dataset: ``get_config(arg)`` (big_vision style).

Loaded by path with ``--config=configs/<name>.py[:arg]`` from a clone (``configs/`` at the
repository root re-exports these modules) or ``--config=<site-packages>/mbcd_jax/configs/
<name>.py[:arg]`` once installed; importable as ``mbcd_jax.configs.hac`` (notebooks, studies).
"""
