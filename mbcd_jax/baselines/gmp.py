"""GMP: gradient modulation and projection per modality, its pieces.

As the MMDG benchmark trains it (``Action recognition/train_GMP.py``, lihongzhao99/MMDG_Benchmark
e98e837). Per present modality m with uni-modal logits ``u_m`` and (multi-source only) a
domain prediction ``q_m = D(P2_m(GRL_0.3(e_m)))`` (JAT's second projector and domain
discriminator), the step builds, on modality m's own parameters ``theta_m`` (its last stage and
its uni-modal head) only:

    g_cls = k_m * grad_{theta_m} (3.0 CE(u_m, y)),   g_dom = p_m * grad_{theta_m} (0.5 CE(q_m, d))

* Confidences: ``c_m`` = batch mean of the softmax probability of the true class (of y for
  ``u_m``, of d for ``q_m``). Semantic ratio ``r_m = c_m / (mean_{j != m} c_j + 1e-6)``; domain
  ratio ``s_m = mean_{j != m} c^dom_j / (c^dom_m + 1e-6)`` (one modality: 1).
* Modulation: ``k_m = 1 - tanh(0.5 r_m)`` clipped to [0, 1] where ``r_m > 1``, else 1 (the
  dominant modality is slowed); ``p_m`` likewise from ``s_m``. Both are constants for the
  gradient (applied to gradients already taken).
* Projection, multi-source only, when ``<g_cls, g_dom> < 0`` over ``theta_m``: the gradient of
  the larger ratio (``r_m >= s_m``: g_cls) loses its component along the other,
  ``g - <g, h> / (|h|^2 + 1e-12) h``.
* The update's gradient is the fused CE's (every trained parameter) plus, per modality,
  ``g_cls + g_dom``. The domain discriminator and projectors receive no gradient at all (they
  are in the optimizer but their ``.grad`` stays None): they stay at their random init.
* Recipe: Adam lr 1e-4, no weight decay (the ``adam`` branch), 15 epochs, batch 16.

Not a plug-in yet (no ``EXTENSION``): the projection needs per-modality parameter gradients of
separate terms, which the step does not give a method (it differentiates the sum of the terms
once). What it would reuse is in place: the domain labels (``extensions.StepView.sources``),
the number of sources (a ``num_sources`` hyper-parameter, filled in by ``methods.resolve``) and
JAT's second projectors and domain discriminator (``jat.init`` / ``jat.heads``). The pieces
below are checked against the authors' functions by ``benchmarks/baselines_harness_nel_jat_gmp.py``.
"""
import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from mbcd_jax.method import losses

PyTree = object


@dataclasses.dataclass(frozen=True)
class Hparams:
  alpha_k: float = 0.5              # semantic modulation's tanh slope
  alpha_p: float = 0.5              # domain modulation's
  cls_loss: float = 3.0
  domain_adv_loss_local: float = 0.5
  alpha_rev2: float = 0.3
  project_out_dim: int = 512


def mean_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B, C], [B]`` -> batch mean of ``softmax(logits)[label]``."""
  p = jax.nn.softmax(losses.at_least_f32(logits), -1)
  return jnp.take_along_axis(p, labels[:, None].astype(jnp.int32), -1).mean()


def ratios(conf: Mapping[str, jax.Array], *, domain: bool, eps: float = 1e-6) -> dict:
  """Each modality's confidence against the others' mean: ``c_m / (mean_others + eps)``, or
  for the domain side ``mean_others / (c_m + eps)``; 1 for a single modality."""
  ms = list(conf)
  if len(ms) <= 1:
    return {m: jnp.ones(()) for m in ms}
  out = {}
  for m in ms:
    others = jnp.stack([conf[j] for j in ms if j != m]).mean()
    out[m] = others / (conf[m] + eps) if domain else conf[m] / (others + eps)
  return out


def modulation(ratio: jax.Array, alpha: float) -> jax.Array:
  """``1 - tanh(alpha r)`` clipped to [0, 1] where ``r > 1``, else 1."""
  return jnp.where(ratio > 1.0, jnp.clip(1.0 - jnp.tanh(alpha * ratio), 0.0, 1.0), 1.0)


def _dot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def project_conflict(g: PyTree, h: PyTree, eps: float = 1e-12) -> PyTree:
  """``g - <g, h> / (|h|^2 + eps) h`` over whole pytrees."""
  c = _dot(g, h) / (_dot(h, h) + eps)
  return jax.tree.map(lambda x, y: x - c * y, g, h)


def combine(g_cls: PyTree, g_dom: PyTree | None, sem_ratio: jax.Array, dom_ratio: jax.Array,
            sem_coeff: jax.Array, dom_coeff: jax.Array) -> PyTree:
  """One modality's ``g_cls + g_dom`` after modulation and (on conflict) projection.

  ``g_cls``, ``g_dom``: gradients over the modality's parameters (same pytree), unscaled;
  ``g_dom`` None for a single source (no domain term, no projection)."""
  g_cls = jax.tree.map(lambda x: sem_coeff * x, g_cls)
  if g_dom is None:
    return g_cls
  g_dom = jax.tree.map(lambda x: dom_coeff * x, g_dom)
  conflict = _dot(g_cls, g_dom) < 0
  proj_cls = sem_ratio >= dom_ratio
  g_cls2 = jax.tree.map(lambda a, b: jnp.where(conflict & proj_cls, a, b),
                        project_conflict(g_cls, g_dom), g_cls)
  g_dom2 = jax.tree.map(lambda a, b: jnp.where(conflict & ~proj_cls, a, b),
                        project_conflict(g_dom, g_cls), g_dom)
  return jax.tree.map(jnp.add, g_cls2, g_dom2)


def coefficients(uni_logits: Mapping[str, jax.Array], labels: jax.Array,
                 domain_logits: Mapping[str, jax.Array] | None = None,
                 domains: jax.Array | None = None, hp: Hparams = Hparams()) -> dict:
  """``{m: (r_m, s_m, k_m, p_m)}`` from the step's predictions (all constants)."""
  sem_conf = {m: mean_confidence(uni_logits[m], labels) for m in uni_logits}
  sem_r = ratios(sem_conf, domain=False)
  if domain_logits is None:
    one = {m: jnp.ones(()) for m in uni_logits}
    dom_r, dom_k = one, one
  else:
    dom_r = ratios({m: mean_confidence(domain_logits[m], domains) for m in uni_logits},
                   domain=True)
    dom_k = {m: modulation(dom_r[m], hp.alpha_p) for m in uni_logits}
  return {m: tuple(jax.lax.stop_gradient(v) for v in (
      sem_r[m], dom_r[m], modulation(sem_r[m], hp.alpha_k), dom_k[m])) for m in uni_logits}
