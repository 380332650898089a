"""Gradient consistency through a uni-modal inner-loop step (paper Eqs. 5-6; docs/method.md §3).

Eq. 5:  min  sum_k CE_k(theta_k) + CE_mm({theta'_k}),   theta'_k = theta_k - alpha grad CE_k(theta_k)
Eq. 6:  to first order in alpha this is  sum_k CE_k + CE_mm - alpha sum_k <grad_k CE_k, grad_k CE_mm>

Modes:
  inner_first_order   Eq. 5 with the inner gradient held constant (the port; default).
  inner_second_order  exact Eq. 5: differentiate through the inner step (Hessian-vector products).
  grad_dot            Eq. 6's explicit dot-product penalty, differentiated exactly.
  off                 no inner step; the fused loss is taken at theta.
The three active modes agree in loss to O(alpha^2); ``inner_second_order`` and ``grad_dot``
also agree in gradient to O(alpha^2) (tests/test_consistency.py checks the scaling).

The gradients here are taken with respect to the *trainable encoder parameters* only (the port
updates layer4 and nothing else), through the VJP of the shared encoder forward pass, so one
backward pass yields every modality's gradient at once.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
MODES = ('inner_first_order', 'inner_second_order', 'grad_dot', 'off')


def needs_unimodal_grads(mode: str) -> bool:
  return mode != 'off'


def modality_grads(encode_vjp: Callable, dloss_dh: dict) -> PyTree:
  """Encoder gradients of a loss from its gradient w.r.t. the features.

  Args:
    encode_vjp: the VJP function of ``enc_params -> {m: h_m}`` (from ``jax.vjp``).
    dloss_dh: modality -> ``[B, D_m]`` cotangent. Because modality m's features depend only on
      its own encoder, feeding every uni-modal loss's cotangent at once gives
      ``grad_{theta_k} CE_k`` for all k in one backward pass.
  Returns:
    A pytree like the encoder params.
  """
  (g,) = encode_vjp(dloss_dh)
  return g


def inner_update(enc_params: PyTree, grads: PyTree, alpha: float, *,
                 second_order: bool) -> PyTree:
  """theta' = theta - alpha * g. First order treats g as a constant (no gradient through it)."""
  if not second_order:
    grads = jax.lax.stop_gradient(grads)
  return jax.tree.map(lambda p, g: p - alpha * g, enc_params, grads)


def grad_dot_penalty(uni_grads: PyTree, fused_grads: PyTree, alpha: float) -> jax.Array:
  """Eq. 6's term: -alpha * sum_k <grad_k CE_k, grad_k CE_mm> (a dot product, not a cosine)."""
  dots = jax.tree.map(lambda a, b: jnp.vdot(a, b), uni_grads, fused_grads)
  return -alpha * sum(jax.tree.leaves(dots))
