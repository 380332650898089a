"""mbcd_jax: JAX/Flax implementation of MBCD (Modality-Balanced Collaborative Distillation)."""

MODALITIES = ('video', 'flow', 'audio')
