"""Measurements and cross-framework harnesses, run from the clone's root as modules::

    python -m benchmarks.step_time --reps 20

Each script's docstring gives its commands; docs/performance.md records their results."""
