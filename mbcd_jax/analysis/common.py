"""What every analysis needs: a trained state, and forward passes of the evaluated model.

``mbcd_jax.train.train_and_evaluate`` returns a summary, not the weights, so the analyses train
through ``train.build(config)`` and its jitted steps here (the same loop, without logging), and
keep the result in the run directory with ``flax.serialization``:

    trained = common.train_or_load(config, 'runs/analysis/mbcd')   # trains once, then loads
    trained.state            # TrainState (student params, frozen trunks, EMA teacher)
    trained.history          # [{'epoch', 'val': {...}, 'test': {...}}] as train.evaluate gives
    common.logits(trained, batch, who='teacher')   # {'fused': [B, C], 'video': [B, C], ...}

Files in ``run_dir``: ``config.json`` (the resolved config), ``state.msgpack`` (the TrainState's
bytes; restored into a fresh ``init`` template, so the config must build the same model) and
``history.json``.

"Evaluated model" means what the method reports: the EMA teacher when there is one (its fused
head on EMA encoders), else the student (``MethodSpec.evaluated``).
"""
import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mbcd_jax import config_lib, losses, sharding, train as train_lib

PyTree = Any


@dataclasses.dataclass
class Trained:
  """A built run and its trained state.

  Attributes:
    run: ``train.build(config)``'s dict (model, spec, loaders, jitted steps, ...).
    state: the final ``step.TrainState``.
    history: one record per evaluated epoch: ``{'epoch', 'step', 'val', 'test'}``.
    wall_time_s: training time (0 when loaded).
  """
  run: dict
  state: Any
  history: list
  wall_time_s: float = 0.0

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.run['config']

  @property
  def spec(self):
    return self.run['spec']

  @property
  def model(self):
    return self.run['model']

  @property
  def who(self) -> str:
    """'teacher' for EMA methods, else 'student'."""
    return self.spec.evaluated

  @property
  def modalities(self) -> tuple:
    return tuple(self.config.data.modalities)


# ---------------------------------------------------------------------------- training
def train(config: ml_collections.ConfigDict, *, eval_every_epochs: int | None = None,
          log: Callable[[str], None] | None = None) -> Trained:
  """Trains ``config`` exactly as ``train.train_and_evaluate`` does and returns the state.

  Args:
    config: a full config (``configs/hac.py:synthetic`` etc.).
    eval_every_epochs: evaluate val/test every this many epochs (default the config's);
      the last epoch is always evaluated.
    log: optional line printer for per-epoch progress.
  """
  run = train_lib.build(config)
  config, mesh, loaders = run['config'], run['mesh'], run['loaders']
  every = eval_every_epochs or config.train.eval_every_epochs
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state = run['init'](init_rng)
  history, t0 = [], time.time()
  for epoch in range(config.train.epochs):
    for batch in loaders['train'].epoch(epoch):
      state, _ = run['train_step'](state, sharding.shard_batch(batch, mesh), step_rng)
    if (epoch + 1) % every and epoch + 1 != config.train.epochs:
      continue
    rec = {'epoch': epoch + 1, 'step': int(state.step),
           'val': train_lib.evaluate(run['eval_step'], state, loaders['val'], mesh),
           'test': train_lib.evaluate(run['eval_step'], state, loaders['test'], mesh)}
    history.append(rec)
    if log:
      who = run['spec'].evaluated
      log(f'  epoch {epoch + 1}: val {rec["val"][f"{who}/fused"]:.1f} '
          f'test {rec["test"][f"{who}/fused"]:.1f} ({who})')
  return Trained(run, state, history, time.time() - t0)


def save(trained: Trained, run_dir: str):
  """Writes config.json, state.msgpack and history.json into ``run_dir``."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    f.write(trained.config.to_json_best_effort(indent=2))
  with open(os.path.join(run_dir, 'state.msgpack'), 'wb') as f:
    f.write(flax.serialization.to_bytes(jax.device_get(trained.state)))
  with open(os.path.join(run_dir, 'history.json'), 'w') as f:
    json.dump({'history': trained.history, 'wall_time_s': trained.wall_time_s}, f)


def load_config_json(path: str) -> ml_collections.ConfigDict:
  """A config written by ``to_json_best_effort`` -> ConfigDict (lists where tuples were; the
  builders accept both)."""
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load(run_dir: str) -> Trained:
  """Rebuilds the run from ``run_dir/config.json`` and restores ``state.msgpack`` into it."""
  run = train_lib.build(load_config_json(os.path.join(run_dir, 'config.json')))
  template = run['init'](jax.random.key(0))
  with open(os.path.join(run_dir, 'state.msgpack'), 'rb') as f:
    state = flax.serialization.from_bytes(template, f.read())
  history_path = os.path.join(run_dir, 'history.json')
  history = []
  if os.path.exists(history_path):
    with open(history_path) as f:
      history = json.load(f)['history']
  return Trained(run, state, history)


def train_or_load(config: ml_collections.ConfigDict, run_dir: str, **kwargs) -> Trained:
  """Loads ``run_dir`` if it holds a saved state, else trains ``config`` and saves it there."""
  if os.path.exists(os.path.join(run_dir, 'state.msgpack')):
    return load(run_dir)
  trained = train(config, **kwargs)
  save(trained, run_dir)
  return trained


# ---------------------------------------------------------------------------- forward passes
def evaluated_params(trained: Trained, who: str | None = None) -> PyTree:
  """The trainable params of ``who`` ('student' | 'teacher'; default the evaluated model)."""
  who = who or trained.who
  return trained.state.teacher if who == 'teacher' else trained.state.params


def batches(trained: Trained, split: str, limit: int | None = None) -> Iterator[dict]:
  """The split's (padded, fixed-order) eval batches as numpy dicts with a 'mask'. For 'train'
  the eval loader order is used too (no shuffling, no augmentation: a fixed set)."""
  if split == 'train':
    from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    loader = input_pipeline.Loader(
        trained.run['loaders']['train'].source, trained.run['loaders']['val'].transform,
        trained.config.data.eval_batch_size, train=False)
  else:
    loader = trained.run['loaders'][split]
  for i, b in enumerate(loader.epoch(0)):
    if limit is not None and i >= limit:
      return
    yield b


def logits(trained: Trained, batch: Mapping[str, Any], *, who: str | None = None,
           params: PyTree | None = None, keep: Mapping[str, Any] | None = None) -> dict:
  """Eval-mode logits of every head: {'fused': [B, C], m: [B, C]}.

  Args:
    batch: model-ready inputs (modality -> ``[B, ...]``).
    who: 'student' | 'teacher' (default the evaluated model); ignored if ``params`` is given.
    params: explicit trainable params (e.g. perturbed weights for the flatness analysis).
    keep: modality -> ``[B]`` 0/1 multiplying that modality's normalised feature in the fused
      head's input (the AMD mask; zeros = a missing modality at the feature level).
  """
  params = evaluated_params(trained, who) if params is None else params
  inputs = {m: jnp.asarray(batch[m]) for m in trained.modalities}
  keep = None if keep is None else {m: jnp.asarray(v, jnp.float32) for m, v in keep.items()}
  return _logits_fn(trained.model)(params, trained.state.frozen, inputs, keep)


_CACHE: dict = {}


def _logits_fn(model):
  key = id(model)   # the model dataclass holds dicts: not hashable
  if key not in _CACHE:
    @jax.jit
    def fn(params, frozen, inputs, keep):
      feats = model.trunk_features(frozen, inputs)
      h = model.encode_all(params['encoders'], params['norms'], frozen, feats)
      out = {'fused': model.fused_logits(params['fused_head'], h, keep, train=False)}
      out.update(model.uni_logits(params['uni_heads'], h, train=False))
      return out
    _CACHE[key] = (model, fn)   # keeps the model alive so its id is not reused
  return _CACHE[key][1]


def features(trained: Trained, split: str, who: str | None = None) -> tuple[dict, np.ndarray]:
  """Normalised encoder features of every real example of ``split``.

  Returns:
    (modality -> ``[N, D_m]`` float32, labels ``[N]`` int).
  """
  model, params = trained.model, evaluated_params(trained, who)

  @jax.jit
  def enc(inputs):
    feats = model.trunk_features(trained.state.frozen, inputs)
    return model.encode_all(params['encoders'], params['norms'], trained.state.frozen, feats)

  out = {m: [] for m in trained.modalities}
  labels = []
  for b in batches(trained, split):
    real = np.asarray(b['mask']) > 0
    h = jax.device_get(enc({m: jnp.asarray(b[m]) for m in trained.modalities}))
    for m in trained.modalities:
      out[m].append(np.asarray(h[m])[real])
    labels.append(np.asarray(b['label'])[real])
  return {m: np.concatenate(v) for m, v in out.items()}, np.concatenate(labels)


def accuracy(trained: Trained, split: str, *, who: str | None = None,
             transform: Callable[[dict, int], dict] | None = None,
             keep_fn: Callable[[dict], Mapping[str, Any]] | None = None,
             params: PyTree | None = None) -> dict:
  """Accuracy (%) of every head, and the fused head's mean CE, over ``split``.

  Args:
    transform: ``(batch, batch_index) -> batch`` applied to the model-ready inputs (noise,
      a zeroed modality, ...).
    keep_fn: ``batch -> keep mask`` for the fused head (see ``logits``).
  Returns:
    {'fused': %, m: %, 'loss': mean fused CE}.
  """
  correct: dict[str, float] = {}
  loss_sum, n = 0.0, 0.0
  for i, b in enumerate(batches(trained, split)):
    if transform is not None:
      b = transform(dict(b), i)
    z = logits(trained, b, who=who, params=params,
               keep=None if keep_fn is None else keep_fn(b))
    mask = np.asarray(b['mask'])
    labels = np.asarray(b['label'])
    for k, v in z.items():
      correct[k] = correct.get(k, 0.0) + float((np.asarray(losses.correct(v, labels)) * mask).sum())
    logp = jax.nn.log_softmax(z['fused'].astype(jnp.float32))
    nll = -np.take_along_axis(np.asarray(logp), labels[:, None], -1)[:, 0]
    loss_sum += float((nll * mask).sum())
    n += float(mask.sum())
  out = {k: 100.0 * v / n for k, v in correct.items()}
  out['loss'] = loss_sum / n
  return out


def save_json(obj: Any, path: str):
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2, default=float)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``'configs/hac.py:synthetic'`` -> the file's ``get_config('synthetic')`` (no absl flags)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(':')
  mod_spec = importlib.util.spec_from_file_location('_mbcd_config_' + str(abs(hash(path))), path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
             ) -> ml_collections.ConfigDict:
  """A copy of ``config`` with dotted-key overrides, e.g. ``{'method.name': 'erm'}``."""
  config = ml_collections.ConfigDict(config.to_dict())
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config_lib.normalize(config)


def matplotlib_pyplot():
  """pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
