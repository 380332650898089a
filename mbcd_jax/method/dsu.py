"""DSU: uncertainty of feature statistics (Li et al., ICLR 2022, "Uncertainty Modeling for
Out-of-Distribution Generalization"), as the MBCD reference code applies it.

The paper does not mention it; the public port always enables it (``config.model.dsu``). For a
feature map ``x`` ``[B, *S, C]`` (channels-last; ``S`` the time/space axes):

  mu_bc    = mean_S x_b,c                       sigma_bc = sqrt(var_S x_b,c + eps)
  S_mu_c   = sqrt(var_B mu_.c + eps)            S_sig_c  = sqrt(var_B sigma_.c + eps)
  beta_bc  = mu_bc + e1_bc S_mu_c               gamma_bc = sigma_bc + e2_bc S_sig_c
  DSU(x)   = gamma * (x - mu) / sigma + beta,   e1, e2 ~ N(0, 1) per (sample, channel)

Both variances are unbiased (``torch.var``'s default), eps = 1e-6, and every statistic is
differentiated through (none is detached). The whole call is applied with probability ``p``:
one coin per call for the whole batch, as the reference's ``random.random() > p`` test. A call
on several maps (SlowFast's ``(slow, fast)``) flips one coin for all of them and draws
independent noise per map. ``var_B`` is over the global batch (the step is jitted over the
sharded batch), so the noise scale does not depend on the number of devices.
"""
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
EPS = 1e-6


def perturb_map(x: jax.Array, e_mu: jax.Array, e_sigma: jax.Array,
                eps: float = EPS) -> jax.Array:
  """DSU(x) for given noise. x ``[B, *S, C]``; e_mu, e_sigma ``[B, C]``. Returns ``x``'s shape.

  Computed in at least float32 (float64 stays float64) and returned in ``x``'s dtype.
  """
  b, c = x.shape[0], x.shape[-1]
  n = x.size // (b * c)
  if b < 2 or n < 2:
    raise ValueError(f'DSU needs at least 2 samples and 2 positions per channel (unbiased '
                     f'variances), got a feature map of shape {x.shape}')
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(1, x.ndim - 1))
  mu = xf.mean(axes)                                          # [B, C]
  sigma = jnp.sqrt(jnp.var(xf, axis=axes, ddof=1) + eps)      # [B, C]
  s_mu = jnp.sqrt(jnp.var(mu, axis=0, ddof=1, keepdims=True) + eps)        # [1, C]
  s_sigma = jnp.sqrt(jnp.var(sigma, axis=0, ddof=1, keepdims=True) + eps)  # [1, C]
  beta = mu + e_mu * s_mu
  gamma = sigma + e_sigma * s_sigma
  expand = lambda v: v.reshape((b,) + (1,) * len(axes) + (c,))
  y = (xf - expand(mu)) / expand(sigma) * expand(gamma) + expand(beta)
  return y.astype(x.dtype)


def apply(rng: jax.Array, feats: PyTree, p: float) -> PyTree:
  """With probability ``p``, DSU on every map of ``feats`` (an array or a tuple of arrays).

  Args:
    rng: this call's key (coin and noise).
    feats: ``[B, *S, C]`` map(s).
    p: probability of perturbing (the reference: 0.5).
  """
  leaves, treedef = jax.tree.flatten(feats)
  r_coin, r_noise = jax.random.split(rng)
  apply_it = jax.random.bernoulli(r_coin, p)
  out = []
  for i, x in enumerate(leaves):
    k_mu, k_sigma = jax.random.split(jax.random.fold_in(r_noise, i))
    shape = (x.shape[0], x.shape[-1])
    y = perturb_map(x, jax.random.normal(k_mu, shape), jax.random.normal(k_sigma, shape))
    out.append(jnp.where(apply_it, y, x))
  return jax.tree.unflatten(treedef, out)
