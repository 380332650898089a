"""Cross-modal collaborative distillation from the EMA teacher (paper Eq. 8; docs/method.md §4).

  L_dis = lambda_mm KL(p_EMA || p_mm) + lambda_um sum_k KL(p_EMA || p_k)

p_EMA is the teacher's *fused* prediction (no dropout, no AMD, no gradient); p_mm the student's
fused prediction (at theta' with AMD, the same logits as the fused CE); p_k the student's
uni-modal predictions (at theta). The port uses lambda_mm = lambda_um = 1 and temperature 1; we
do not multiply by T^2, so T != 1 changes the effective weight (set lambda accordingly).
"""
from typing import Mapping

import jax
import jax.numpy as jnp

from mbcd_jax.method import losses


def teacher_probs(teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """p_EMA: ``[B, C]`` softmax of the teacher's fused logits at the temperature, no gradient."""
  logits = losses.at_least_f32(jax.lax.stop_gradient(teacher_logits))
  return jax.nn.softmax(logits / temperature)


def distillation_loss(p_teacher: jax.Array, fused_logits: jax.Array,
                      uni_logits: Mapping[str, jax.Array], *, lambda_mm: float,
                      lambda_um: float, temperature: float) -> tuple[jax.Array, dict]:
  """Eq. 8. Returns (weighted loss, {'kl_mm': ..., 'kl_um/<m>': ...} unweighted terms)."""
  terms = {'kl_mm': losses.kl_divergence(p_teacher, fused_logits, temperature)}
  for m, z in uni_logits.items():
    terms[f'kl_um/{m}'] = losses.kl_divergence(p_teacher, z, temperature)
  total = lambda_mm * terms['kl_mm'] + lambda_um * sum(
      v for k, v in terms.items() if k.startswith('kl_um/'))
  return total, terms
