"""Experiment configs: ``get_config(arg)`` per dataset, loaded by path with
``--config=configs/<name>.py[:arg]`` (absl ``config_flags``).

A package so that one config can build on another with a plain import (``from configs import
hac``), both from a clone (the repository root on ``sys.path``) and once installed.
"""
