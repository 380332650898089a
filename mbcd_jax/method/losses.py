"""Cross-entropy and KL divergence, batch-averaged as in PyTorch's defaults."""
import jax
import jax.numpy as jnp


def at_least_f32(x: jax.Array) -> jax.Array:
  """Losses in float32 under bf16 compute, but never *down*-cast float64 (finite-diff tests)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy. logits: ``[B, C]``; labels: ``[B]`` int. Returns a scalar."""
  logp = jax.nn.log_softmax(at_least_f32(logits))
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1).mean()


def kl_divergence(teacher_probs: jax.Array, student_logits: jax.Array,
                  temperature: float = 1.0) -> jax.Array:
  """KL(p_teacher || softmax(student / T)), summed over classes, mean over the batch.

  Equals ``F.kl_div(log_softmax(s / T), p_t, reduction='batchmean')``. The teacher's
  probabilities are clamped at 1e-12 before the log as the port does, so a saturated teacher
  cannot produce ``0 * log 0 = nan``.

  Args:
    teacher_probs: ``[B, C]`` probabilities (already at temperature T); no gradient flows.
    student_logits: ``[B, C]``.
  """
  p = jnp.clip(at_least_f32(jax.lax.stop_gradient(teacher_probs)), 1e-12)
  logq = jax.nn.log_softmax(at_least_f32(student_logits) / temperature)
  return (p * (jnp.log(p) - logq)).sum(-1).mean()


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B]`` float 1/0: top-1 prediction equals the label."""
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
