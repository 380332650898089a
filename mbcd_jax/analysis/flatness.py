"""Flatness of the loss around a trained model (paper Fig. 3, SWAD-style) and a 2-D loss
landscape slice (paper Fig. 1c, Li et al. 2018's filter-normalised directions).

Flatness: for each radius r, draw ``num_directions`` random directions d (Gaussian, scaled to
global norm 1 over the perturbed parameters) and report the mean and std of
``L(theta + r d) - L(theta)``. A flatter minimum has a smaller increase at every radius.

Landscape: two random directions d1, d2, each *filter-normalised* (every output filter of a
kernel rescaled to the norm of the same filter of theta; biases and other 1-D parameters get
zero, as Li et al. do), and the grid ``L(theta + a d1 + b d2)``.

Both take a plain ``loss_fn(params) -> scalar`` so they can be checked on a known quadratic
(tests/test_analysis.py); ``model_loss_fn`` builds it for a trained model: the evaluated
model's fused-head CE on a fixed set of examples, perturbing only what the fused prediction
reads (the encoders' trainable stages and the fused head).

  python -m mbcd_jax.analysis flatness --config=configs/hac.py:synthetic \
      --methods=erm,ema,mbcd --workdir=runs/analysis --out=docs/study
"""
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mbcd_jax.analysis import common

PyTree = Any


def global_norm(tree: PyTree) -> float:
  return float(jnp.sqrt(sum(jnp.vdot(x, x).real for x in jax.tree.leaves(tree))))


def random_direction(key: jax.Array, params: PyTree) -> PyTree:
  """A Gaussian direction shaped like ``params`` with global L2 norm 1."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  d = [jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves)]
  n = jnp.sqrt(sum(jnp.vdot(x, x) for x in d))
  return jax.tree.unflatten(treedef, [x / n for x in d])


def filter_normalized_direction(key: jax.Array, params: PyTree) -> PyTree:
  """Li et al.'s direction: Gaussian, each output filter (last axis of a kernel) rescaled to
  the norm of the same filter of ``params``; 1-D leaves (biases) are zero."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, p in zip(keys, leaves):
    if p.ndim <= 1:
      out.append(jnp.zeros_like(p))
      continue
    d = jax.random.normal(k, p.shape, p.dtype)
    axes = tuple(range(p.ndim - 1))
    d_norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
    p_norm = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True))
    out.append(d * p_norm / (d_norm + 1e-10))
  return jax.tree.unflatten(treedef, out)


def _axpy(params, d, r):
  return jax.tree.map(lambda p, x: p + r * x, params, d)


def flatness_curve(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
                   radii: Sequence[float], num_directions: int, key: jax.Array) -> dict:
  """Loss increase under random perturbations of norm r, averaged over directions.

  Returns:
    {'radii', 'base_loss', 'increase_mean', 'increase_std'} (lists aligned with radii).
  """
  base = float(loss_fn(params))
  dirs = [random_direction(k, params) for k in jax.random.split(key, num_directions)]
  mean, std = [], []
  for r in radii:
    inc = np.array([float(loss_fn(_axpy(params, d, r))) - base for d in dirs])
    mean.append(float(inc.mean()))
    std.append(float(inc.std()))
  return {'radii': [float(r) for r in radii], 'base_loss': base, 'increase_mean': mean,
          'increase_std': std}


def landscape_2d(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
                 coords: Sequence[float], key: jax.Array) -> dict:
  """``L(theta + a d1 + b d2)`` on the grid ``coords x coords`` (filter-normalised d1, d2).

  Returns:
    {'coords', 'loss': [len(coords)][len(coords)] (rows: a along d1, cols: b along d2),
     'directions': (d1, d2)}.
  """
  k1, k2 = jax.random.split(key)
  d1 = filter_normalized_direction(k1, params)
  d2 = filter_normalized_direction(k2, params)
  grid = [[float(loss_fn(_axpy(_axpy(params, d1, a), d2, b))) for b in coords]
          for a in coords]
  return {'coords': [float(c) for c in coords], 'loss': grid, 'directions': (d1, d2)}


def model_loss_fn(trained: common.Trained, split: str = 'train', max_examples: int = 128,
                  who: str | None = None) -> tuple[Callable, PyTree, Callable]:
  """The evaluated model's mean fused CE on the first ``max_examples`` examples of ``split``.

  Returns:
    (loss_fn over the perturbed subset, that subset of params, merge(subset) -> full params).
  """
  weights = common.evaluated_weights(trained, who)
  full = weights.params
  xs, ys = [], []
  n = 0
  for b in common.batches(trained, split):
    real = np.asarray(b['mask']) > 0
    xs.append({m: np.asarray(b[m])[real] for m in trained.modalities})
    ys.append(np.asarray(b['label'])[real])
    n += int(real.sum())
    if n >= max_examples:
      break
  inputs = {m: jnp.asarray(np.concatenate([x[m] for x in xs])[:max_examples])
            for m in trained.modalities}
  labels = jnp.asarray(np.concatenate(ys)[:max_examples])
  model = trained.model
  # the frozen trunk, once (inference mode, on the evaluated network's own BN statistics)
  feats = jax.jit(model.trunk_features)(weights.frozen, inputs, weights.batch_stats)

  def merge(sub):
    return {**full, 'encoders': sub['encoders'], 'fused_head': sub['fused_head']}

  @jax.jit
  def loss_fn(sub):
    z = common.forward(model, weights.replace(params=merge(sub)), trunk=feats)['logits']['fused']
    logp = jax.nn.log_softmax(z.astype(jnp.float32))
    return -jnp.take_along_axis(logp, labels[:, None], -1).mean()

  return loss_fn, {'encoders': full['encoders'], 'fused_head': full['fused_head']}, merge


def run(trained: dict, out_dir: str, *, radius_fractions=(0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
        num_directions: int = 5, grid_points: int = 9, grid_span: float = 1.0,
        seed: int = 0) -> dict:
  """Flatness curves (source train and target test loss) for every method, and a 2-D landscape
  per method; radii are fractions of the first method's perturbed-parameter norm (shared by
  all methods, so the curves are comparable). Writes flatness.json/png, landscape.png."""
  plt = common.matplotlib_pyplot()
  names = list(trained)
  _, ref, _ = model_loss_fn(trained[names[0]])
  ref_norm = global_norm(ref)
  radii = [f * ref_norm for f in radius_fractions]
  coords = list(np.linspace(-grid_span, grid_span, grid_points))
  key = jax.random.key(seed)
  result = {'radii': radii, 'reference_norm': ref_norm, 'methods': {}}
  for name in names:
    entry = {}
    for split in ('train', 'test'):
      fn, sub, _ = model_loss_fn(trained[name], split)
      entry[split] = flatness_curve(fn, sub, radii, num_directions, key)
      entry['param_norm'] = global_norm(sub)
    fn, sub, _ = model_loss_fn(trained[name], 'train')
    land = landscape_2d(fn, sub, coords, jax.random.fold_in(key, 1))
    entry['landscape'] = {'coords': land['coords'], 'loss': land['loss']}
    result['methods'][name] = entry

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for ax, split, title in zip(axes, ('train', 'test'),
                              ('source train loss', 'unseen-domain test loss')):
    for name in names:
      c = result['methods'][name][split]
      ax.errorbar(c['radii'], c['increase_mean'], yerr=c['increase_std'], marker='o',
                  ms=3, capsize=2, label=name)
    ax.set_xlabel('perturbation radius (L2)')
    ax.set_ylabel('loss increase')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(f'{out_dir}/flatness.png', dpi=90)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3))
  axes = np.atleast_1d(axes)
  for ax, name in zip(axes, names):
    land = result['methods'][name]['landscape']
    z = np.array(land['loss'])
    cs = ax.contourf(land['coords'], land['coords'], z.T, levels=15, cmap='viridis')
    ax.contour(land['coords'], land['coords'], z.T, levels=15, colors='k', linewidths=0.3)
    fig.colorbar(cs, ax=ax, fraction=0.046)
    ax.set_title(f'{name} (train CE)', fontsize=10)
    ax.set_xlabel('d1')
    ax.set_ylabel('d2')
  fig.tight_layout()
  fig.savefig(f'{out_dir}/landscape.png', dpi=80)
  plt.close(fig)
  common.save_json(result, f'{out_dir}/flatness.json')
  return result
