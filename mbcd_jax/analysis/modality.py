"""Modality-wise vs fused accuracy of a trained model (paper Fig. 4) and per-modality accuracy
by a post-hoc linear probe on frozen encoder features (paper Fig. 1a).

  heads   the model's own uni-modal heads (for erm / ema they are probes trained on
          stop-gradient features during training; for MBCD they are part of the objective);
  probe   a multinomial logistic regression fitted after training on the frozen, normalised
          features of the source-domain training set, tested on the unseen domain; 'all' is the
          probe on the concatenated features. It measures what each encoder *learnt*,
          independently of how a head was trained.

  python -m mbcd_jax.analysis modality --config=configs/hac.py:synthetic \
      --methods=erm,ema,mbcd --workdir=runs/analysis --out=docs/study
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbcd_jax.analysis import common


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, num_classes: int, *, steps: int = 300, lr: float = 0.05,
                 l2: float = 1e-3) -> dict:
  """Full-batch Adam on softmax regression with L2; returns train/test accuracy (%)."""
  x, y = jnp.asarray(train_x, jnp.float32), jnp.asarray(train_y)
  params = {'w': jnp.zeros((x.shape[1], num_classes)), 'b': jnp.zeros((num_classes,))}
  tx = optax.adam(lr)

  def loss(p):
    logp = jax.nn.log_softmax(x @ p['w'] + p['b'])
    return -jnp.take_along_axis(logp, y[:, None], -1).mean() + l2 * jnp.sum(p['w'] ** 2)

  @jax.jit
  def fit(p):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
    return p

  params = fit(params)

  def acc(a, b):
    z = jnp.asarray(a, jnp.float32) @ params['w'] + params['b']
    return 100.0 * float((jnp.argmax(z, -1) == jnp.asarray(b)).mean())

  return {'train': acc(train_x, train_y), 'test': acc(test_x, test_y)}


def modality_report(trained: common.Trained) -> dict:
  """{'heads': {split: {'fused', m...}}, 'probe': {m | 'all': {'train', 'test'}}}."""
  heads = {s: {k: v for k, v in common.accuracy(trained, s).items() if k != 'loss'}
           for s in ('val', 'test')}
  ftr, ytr = common.features(trained, 'train')
  fte, yte = common.features(trained, 'test')
  c = trained.config.data.num_classes
  probe = {m: linear_probe(ftr[m], ytr, fte[m], yte, c) for m in trained.modalities}
  cat = lambda f: np.concatenate([f[m] for m in trained.modalities], -1)
  probe['all'] = linear_probe(cat(ftr), ytr, cat(fte), yte, c)
  return {'heads': heads, 'probe': probe}


def run(trained: dict, out_dir: str) -> dict:
  """Writes modality.json and modality.png: per method, test accuracy of the fused head and of
  each modality (solid: the model's heads; hatched: the linear probe)."""
  plt = common.matplotlib_pyplot()
  result = {name: modality_report(t) for name, t in trained.items()}
  mods = list(next(iter(trained.values())).modalities)
  cols = ['fused'] + mods
  fig, ax = plt.subplots(figsize=(8, 3.2))
  n = len(result)
  width = 0.8 / (2 * n)
  for i, (name, r) in enumerate(result.items()):
    head = [r['heads']['test'][c] for c in cols]
    probe = [r['probe']['all' if c == 'fused' else c]['test'] for c in cols]
    x = np.arange(len(cols)) + 2 * i * width
    bars = ax.bar(x, head, width, label=f'{name} heads')
    ax.bar(x + width, probe, width, color=bars[0].get_facecolor(), alpha=0.5, hatch='//',
           label=f'{name} probe')
  ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2)
  ax.set_xticklabels(cols)
  ax.set_ylabel('unseen-domain test accuracy (%)')
  ax.legend(fontsize=7, ncol=n)
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(f'{out_dir}/modality.png', dpi=90)
  plt.close(fig)
  common.save_json(result, f'{out_dir}/modality.json')
  return result
