"""mbcd_jax: JAX/Flax implementation of MBCD (Modality-Balanced Collaborative Distillation).

docs/method.md says what the paper specifies, what "the port" (the public MBCD training script
in the MMDG benchmark repository) does, and what this package decided; "the peers" there are the
field's other public code bases (SimMMDG, MOOSA, CMRF) whose loaders and encoders the protocol
follows. Docstrings cite it as ``docs/method.md §N``.
"""

MODALITIES = ('video', 'flow', 'audio')
