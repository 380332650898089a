"""MBCD's components, one module per paper component (docs/method.md says which part of the
paper each implements and where the port or this package departs from it).

  amd.py          adaptive modality dropout (the dropout probabilities from the uni-modal losses)
  consistency.py  gradient consistency between the uni-modal and fused objectives
  distill.py      distillation from the EMA teacher
  ema.py          the teacher's exponential moving average
  dsu.py          feature-statistics uncertainty (the port's DSU perturbation)
  losses.py       the cross-entropy and KL terms the others share

The modules are pure functions of arrays: they import nothing from the runtime (train loop,
config, checkpoints) but ``mbcd_jax.errors`` and the package root's constants
(tests/test_layout.py checks it). ``mbcd_jax/step.py`` composes them into the train step.
"""
