"""What every analysis needs: a trained state, and forward passes of the evaluated model.

The analyses read finished runs' orbax checkpoints (``mbcd_jax/checkpoint.py``); they never
train a model a run already holds. A run that does not exist yet is trained by
``train.train_and_evaluate`` (the one training loop) and then loaded the same way:

    trained = common.train_or_load(config, 'runs/study/mbcd/.../seed0')  # trains only if needed
    trained = common.load(run_dir, which='best')   # or the best-validation checkpoint
    trained.state            # TrainState (student params, frozen trunks, EMA teacher)
    trained.history          # [{'epoch', 'step', 'val': {...}, 'test': {...}}] up to that step
    common.logits(trained, batch, who='teacher')   # {'fused': [B, C], 'video': [B, C], ...}

Which checkpoint: ``which='last'`` (default) is the end-of-training state, the model of the
summary's 'last' row; ``which='best'`` is the best-validation one (the 'best_val' row). The
model is rebuilt from the config stored in the checkpoint, not from the caller's.

"Evaluated model" means what the method reports: the EMA teacher when there is one (its fused
head on EMA encoders), else the student (``MethodSpec.evaluated``).
"""
import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mbcd_jax import checkpoint as ckpt_lib, config_lib, models, step as step_lib
from mbcd_jax.method import losses
from mbcd_jax.study import experiments
from mbcd_jax import train as train_lib

PyTree = Any
CHECKPOINTS = ('last', 'best')


@dataclasses.dataclass
class Trained:
  """A built run and a state loaded from one of its checkpoints.

  Attributes:
    run: ``train.build(config)`` (model, spec, loaders, jitted steps, ...).
    state: the checkpoint's ``step.TrainState``.
    history: one record per evaluated epoch up to the checkpoint's step:
      ``{'epoch', 'step', 'val', 'test'}``.
    step: the checkpoint's step; run_dir: where it was loaded from.
  """
  run: train_lib.Run
  state: Any
  history: list
  step: int = 0
  run_dir: str | None = None

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.run.config

  @property
  def spec(self):
    return self.run.spec

  @property
  def model(self):
    return self.run.model

  @property
  def who(self) -> str:
    """'teacher' for EMA methods, else 'student'."""
    return self.spec.evaluated

  @property
  def modalities(self) -> tuple:
    return tuple(self.config.data.modalities)


# ---------------------------------------------------------------------------- runs
def finished(run_dir: str) -> bool:
  """A run is finished when ``train_and_evaluate`` wrote its ``summary.json``."""
  return os.path.exists(os.path.join(run_dir, 'summary.json'))


def checkpoint_step(ckpt: ckpt_lib.Checkpointer, which: str = 'last') -> int:
  """The step of ``ckpt``'s latest ('last') or best-validation ('best') checkpoint."""
  if which not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {CHECKPOINTS}, got {which!r}')
  step = ckpt.latest_step()
  if step is None:
    raise ckpt_lib.CheckpointError(f'{ckpt.directory}: no checkpoint to load')
  if which == 'best':
    step = ckpt.read_meta(step)['best'].get('step')
    if step is None or step not in ckpt.all_steps():
      raise ckpt_lib.CheckpointError(f'{ckpt.directory}: no best-validation checkpoint '
                                     f'(best step {step}, kept {ckpt.all_steps()})')
  return step


def load(run_dir: str, which: str = 'last') -> Trained:
  """Restores ``run_dir``'s last or best-validation checkpoint into its own rebuilt model."""
  if not os.path.isdir(os.path.join(run_dir, ckpt_lib.SUBDIR)):
    raise ckpt_lib.CheckpointError(f'{os.path.join(run_dir, ckpt_lib.SUBDIR)}: no checkpoints '
                                   '(not a trained run)')
  ckpt = ckpt_lib.Checkpointer(run_dir, async_save=False)
  try:
    step = checkpoint_step(ckpt, which)
    config = ml_collections.ConfigDict(ckpt.read_meta(step)['config'])
    run = train_lib.build(config)
    state, meta = ckpt.restore(step, run.abstract_state(jax.random.key(0)))
  finally:
    ckpt.close()
  return Trained(run, state, meta['history'], step, run_dir)


def train_or_load(config: ml_collections.ConfigDict | None, run_dir: str,
                  which: str = 'last') -> Trained:
  """Loads ``run_dir``'s checkpoint; trains ``config`` there first if the run is not finished
  (``train.train_and_evaluate``: resumes a partial run). ``config`` may be None for a finished
  run; if it differs from the run's, the run's is used and the difference logged."""
  if not finished(run_dir):
    if config is None:
      raise FileNotFoundError(f'{run_dir}/summary.json: not a finished run, and no config '
                              'to train it with')
    train_lib.train_and_evaluate(config, run_dir)
  trained = load(run_dir, which)
  if config is not None:
    diff = ckpt_lib.config_diff(ckpt_lib.config_to_dict(trained.config),
                                ckpt_lib.config_to_dict(config_lib.normalize(config)))
    if diff:
      logging.warning('%s was trained with another config; using the run\'s (%s)', run_dir,
                      '; '.join(diff))
  return trained


def load_study(config: ml_collections.ConfigDict, workdir: str, methods, which: str = 'last',
               log: Callable[[str], None] = print) -> dict:
  """{method: Trained} from the study directory ``workdir`` (``mbcd_jax.study.experiments``' layout):
  each method's run of ``config``'s modalities, domains and seed.

  A run that is not finished is first trained there as the runner does
  (``experiments.run_all``, i.e. ``train.train_and_evaluate``, resumed if partial), so the study's
  tables see it too; a finished one is only loaded.
  Raises:
    RuntimeError: the training of a missing run failed.
  """
  config = config_lib.normalize(config)
  runs = {m: experiments.run_spec(workdir, config, experiments.Variant(m, (('method.name', m),)),
                                  config.data.modalities, config.data.sources,
                                  config.data.target, config.seed) for m in methods}
  todo = [r for r in runs.values() if not r.finished]
  if todo:
    failed = experiments.run_all(config, todo, log=log)['failed']
    if failed:
      raise RuntimeError(f'training a run for the analysis failed: {failed}')
  out = {}
  for m, r in runs.items():
    log(f'{m}: the {which} checkpoint of {r.run_dir}')
    out[m] = load(r.run_dir, which)
  return out


# ---------------------------------------------------------------------------- forward passes
def forward(model, weights: models.Weights, inputs: Mapping[str, jax.Array] | None = None,
            *, trunk: Mapping[str, jax.Array] | None = None,
            keep: Mapping[str, jax.Array] | None = None) -> dict:
  """The analyses' forward pass: ``MultiModalModel.predict`` (inference mode), with features.

  Args:
    weights: the student's or the teacher's network (``evaluated_weights``).
    inputs: model-ready inputs, modality -> ``[B, ...]``; or instead
    trunk: the frozen trunks' output (``model.trunk_features``), to run them once when the
      same examples go through many perturbed params (flatness).
    keep: modality -> ``[B]`` 0/1 multiplying that modality's normalised feature in the fused
      head's input (the AMD mask; zeros = a missing modality at the feature level).
  Returns:
    {'features': {m: [B, D_m] normalised encoder features},
     'logits': {'fused': [B, C], m: [B, C]}}.
  """
  logits, h = model.predict(weights, inputs, keep=keep, feats=trunk, with_features=True)
  return {'features': h, 'logits': logits}


_JITTED: dict = {}


def _jitted_forward(model) -> Callable:
  """``jax.jit(forward)`` for ``model``, compiled once per model (and input shapes)."""
  key = id(model)   # the model dataclass holds dicts: not hashable
  if key not in _JITTED:
    fn = jax.jit(lambda weights, inputs, keep: forward(model, weights, inputs, keep=keep))
    _JITTED[key] = (model, fn)   # keeps the model alive so its id is not reused
  return _JITTED[key][1]


def evaluated_weights(trained: Trained, who: str | None = None) -> models.Weights:
  """The network of ``who`` ('student' | 'teacher'; default the evaluated model): its params,
  frozen variables and (BN mode 'port') its own running statistics."""
  return step_lib.weights(trained.state, who or trained.who)


def evaluated_params(trained: Trained, who: str | None = None) -> PyTree:
  """The trainable params of ``who`` ('student' | 'teacher'; default the evaluated model)."""
  return evaluated_weights(trained, who).params


def eval_loader(trained: Trained, split: str = 'test', *, source: Any = None,
                transform: Callable | None = None):
  """A fixed-order, padded eval ``Loader`` of ``split`` (for 'train': its records through the
  eval transform), or of another ``source`` (a corrupted copy, an OOD set) batched the same
  way, through the split's eval transform unless ``transform`` is given."""
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  base = trained.run.loaders['val' if split == 'train' else split]
  if source is None and transform is None and split != 'train':
    return base
  if source is None:
    source = trained.run.loaders[split].source
  return input_pipeline.Loader(source, transform or base.transform,
                               trained.config.data.eval_batch_size, train=False,
                               num_workers=base.num_workers, read_threads=base.read_threads)


def batches(trained: Trained, split: str, limit: int | None = None, *, source: Any = None,
            transform: Callable | None = None) -> Iterator[dict]:
  """The split's (padded, fixed-order) eval batches as numpy dicts with a 'mask'. For 'train'
  the eval loader order is used too (no shuffling, no augmentation: a fixed set). ``source``,
  ``transform``: see ``eval_loader``."""
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  loader = eval_loader(trained, split, source=source, transform=transform)
  for i, b in enumerate(loader.epoch(0)):
    if limit is not None and i >= limit:
      return
    yield input_pipeline.normalize_frames_host(b)   # model-ready with data.normalize_on_device


def _predict(trained: Trained, batch: Mapping[str, Any], who: str | None, params: PyTree | None,
             keep: Mapping[str, Any] | None) -> dict:
  weights = evaluated_weights(trained, who)
  if params is not None:
    weights = weights.replace(params=params)
  inputs = {m: jnp.asarray(batch[m]) for m in trained.modalities}
  keep = None if keep is None else {m: jnp.asarray(v, jnp.float32) for m, v in keep.items()}
  return _jitted_forward(trained.model)(weights, inputs, keep)


def logits(trained: Trained, batch: Mapping[str, Any], *, who: str | None = None,
           params: PyTree | None = None, keep: Mapping[str, Any] | None = None) -> dict:
  """Eval-mode logits of every head: {'fused': [B, C], m: [B, C]}.

  Args:
    batch: model-ready inputs (modality -> ``[B, ...]``).
    who: 'student' | 'teacher' (default the evaluated model); ignored if ``params`` is given.
    params: explicit trainable params (e.g. perturbed weights for the flatness analysis).
    keep: the fused head's modality mask (see ``forward``).
  """
  return _predict(trained, batch, who, params, keep)['logits']


def features(trained: Trained, split: str, who: str | None = None) -> tuple[dict, np.ndarray]:
  """Normalised encoder features of every real example of ``split``.

  Returns:
    (modality -> ``[N, D_m]`` float32, labels ``[N]`` int).
  """
  out = {m: [] for m in trained.modalities}
  labels = []
  for b in batches(trained, split):
    real = np.asarray(b['mask']) > 0
    h = jax.device_get(_predict(trained, b, who, None, None)['features'])
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


def fused_outputs(trained: Trained, split: str = 'test', *, who: str | None = None,
                  keep_fn: Callable[[dict], Mapping[str, Any]] | None = None,
                  transform: Callable[[dict, int], dict] | None = None, source: Any = None,
                  record_transform: Callable | None = None,
                  limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The fused head's logits and the labels of every real example of ``split``.

  Args:
    transform, keep_fn: as in ``accuracy`` (on model-ready batches).
    source, record_transform: another record source / eval transform (``eval_loader``).
    limit: at most this many batches.
  Returns:
    (logits ``[N, C]`` float32, labels ``[N]`` int).
  """
  zs, labels = [], []
  for i, b in enumerate(batches(trained, split, limit, source=source,
                                transform=record_transform)):
    if transform is not None:
      b = transform(dict(b), i)
    z = logits(trained, b, who=who, keep=None if keep_fn is None else keep_fn(b))['fused']
    real = np.asarray(b['mask']) > 0
    zs.append(np.asarray(jax.device_get(z), np.float32)[real])
    labels.append(np.asarray(b['label'])[real])
  return np.concatenate(zs), np.concatenate(labels)


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
