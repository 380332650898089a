"""Adaptive Modality Dropout (paper §"Adaptive Modality Dropout"; docs/method.md §2).

Per mini-batch, from the uni-modal logits z_k (stop-gradient, labels unused):
  confidence      s_k = sum_i max_c softmax(z_k,i)_c
  relative speed  r_k = 1/(M-1) sum_{j != k} s_k / s_j
  drop prob       p_k = base + (1 - base) * tanh(r_k - 1)   if r_k > 1 else 0
and each sample keeps modality k's fused-head input with probability 1 - p_k. ``base`` is the
port's ``modality_drop_base`` (0 by default, which gives the paper's tanh(max(r_k - 1, 0))).
Under data parallelism ``s_k`` sums over the global batch (the step is jitted over the whole
sharded batch), so the probabilities do not depend on the number of devices.
"""
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from mbcd_jax.method import losses

MODES = ('adaptive', 'fixed', 'off')


def confidence(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """s_k: sum over the batch of the max softmax probability. logits ``[B, C]`` -> scalar."""
  conf = jax.nn.softmax(losses.at_least_f32(jax.lax.stop_gradient(logits))).max(-1)
  if mask is not None:
    conf = conf * mask
  return conf.sum()


def drop_probs(uni_logits: Mapping[str, jax.Array], mode: str, *, base: float = 0.0,
               fixed_p: float = 0.5, order: Sequence[str] | None = None) -> dict:
  """Per-modality drop probabilities p_k (scalars), for ``mode`` in ``MODES``.

  ``order``: the modalities in the model's order (default: ``uni_logits``' key order, which
  JAX's transformations sort); fixes the order of the sums, so the result does not depend on
  how the logits were computed.
  """
  mods = list(order) if order is not None else list(uni_logits)
  if mode == 'off' or len(mods) < 2:
    return {m: jnp.zeros((), jnp.float32) for m in mods}
  if mode == 'fixed':
    return {m: jnp.full((), fixed_p, jnp.float32) for m in mods}
  if mode != 'adaptive':
    raise ValueError(f'unknown AMD mode {mode!r}; known: {MODES}')
  s = {m: confidence(uni_logits[m]) for m in mods}
  probs = {}
  for k in mods:
    r = sum(s[k] / s[j] for j in mods if j != k) / (len(mods) - 1)
    probs[k] = jnp.where(r > 1, base + (1 - base) * jnp.tanh(r - 1), 0.0)
  return probs


def sample_keep(rng: jax.Array, probs: Mapping[str, jax.Array], batch_size: int,
                order: Sequence[str]) -> dict:
  """Per-sample keep masks: modality -> ``[B]`` float 0/1, keep ~ Bernoulli(1 - p_k).

  Modality ``order[i]`` draws from ``fold_in(rng, i)``: pass the model's modality order, so
  the masks do not depend on the key order of ``probs`` (JAX's transformations return dicts
  with sorted keys, the model's own functions in modality order).
  """
  out = {}
  for i, m in enumerate(order):
    out[m] = jax.random.bernoulli(jax.random.fold_in(rng, i), 1.0 - probs[m],
                                  (batch_size,)).astype(jnp.float32)
  return out
