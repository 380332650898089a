"""Training and evaluation loop: ``train_and_evaluate(config, workdir)``.

Importable from a notebook (no absl flags). Writes to ``workdir``:
  metrics.jsonl   one JSON object per train log / eval event
  events.*        TensorBoard scalars (tensorboardX)
  summary.json    final summary: best-validation and last-epoch accuracies
  config.json     the resolved config
"""
import functools
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from mbcd_jax import config_lib, input_pipeline, models, sharding, step as step_lib


class MetricWriter:
  """JSON lines + TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(workdir)
      except ImportError:  # TensorBoard output is optional
        self._tb = None

  def write(self, step: int, kind: str, scalars: dict):
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': int(step), 'kind': kind,
                                  **{k: float(v) for k, v in scalars.items()}}) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f'{kind}/{k}', float(v), int(step))

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


def evaluate(eval_fn, state, loader: input_pipeline.Loader, mesh) -> dict:
  """Accuracy (%) and mean loss of every head of the student (and teacher) over a split."""
  sums: dict[str, float] = {}
  for batch in loader.epoch(0):
    out = jax.device_get(eval_fn(state, sharding.shard_batch(batch, mesh)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  n = max(sums.pop('count'), 1.0)
  return {k.replace('loss_sum', 'loss'): (v / n if 'loss' in k else 100.0 * v / n)
          for k, v in sums.items()}


def build(config: ml_collections.ConfigDict, mesh=None):
  """Everything a run needs, without running it (for notebooks, benchmarks and tests).

  Returns:
    dict with model, spec, tx, mesh, loaders ('train', 'val', 'test'), and the jitted
    ``train_step(state, batch, rng)``, ``eval_step(state, batch)`` and ``init(rng)``.
  """
  config = config_lib.normalize(config)
  spec = config_lib.validate(config)
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size, mesh)
  sharding.check_batch_size(config.data.eval_batch_size, mesh, 'config.data.eval_batch_size')
  pid, pcount = jax.process_index(), jax.process_count()
  loaders = {s: input_pipeline.make_loader(config, s, process_index=pid, process_count=pcount)
             for s in ('train', 'val', 'test')}
  model = models.build_model(config.model, tuple(config.data.modalities),
                             config.data.num_classes)
  tx = step_lib.make_optimizer(config.optim)
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  example = {k: v[:1] for k, v in loaders['train'].dataset(0)[0].items()}

  @functools.partial(jax.jit, out_shardings=repl)
  def init(rng):
    return step_lib.init_state(model, spec, tx, rng, example)

  train_step = jax.jit(
      functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
      in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=(0,))
  eval_step = jax.jit(functools.partial(step_lib.eval_step, model=model),
                      in_shardings=(repl, data), out_shardings=repl)
  return dict(config=config, model=model, spec=spec, tx=tx, mesh=mesh, loaders=loaders,
              init=init, train_step=train_step, eval_step=eval_step)


def _summary_line(prefix: str, metrics: dict, who: str, modalities) -> str:
  parts = [f'fused {metrics[f"{who}/fused"]:.2f}']
  parts += [f'{m} {metrics[f"{who}/{m}"]:.2f}' for m in modalities]
  return f'{prefix}: ' + ', '.join(parts)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config``'s method, evaluates every ``eval_every_epochs`` on val and test.

  Returns:
    The final summary (also written to ``workdir/summary.json``).
  """
  # ---------------------------------------------------------------- set-up
  run = build(config)
  config, spec, mesh, loaders = run['config'], run['spec'], run['mesh'], run['loaders']
  mods = tuple(config.data.modalities)
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir, enabled=is_main)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info('method %s: %s', spec.name, spec)
  logging.info('devices: %d (%s), processes: %d', mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())
  for s, ld in loaders.items():
    logging.info('%s split: %d examples, %d batches', s, ld.num_examples, ld.num_batches)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state = run['init'](init_rng)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('trainable parameters: %d', n_params)

  # ---------------------------------------------------------------- loop
  steps_per_epoch = loaders['train'].num_batches
  total = steps_per_epoch * config.train.epochs
  who = spec.evaluated
  best = {'val': -1.0}
  history = []
  bar = tqdm.tqdm(total=total, disable=not (is_main and config.train.progress),
                  unit='step', dynamic_ncols=True)
  t0 = time.time()
  for epoch in range(config.train.epochs):
    for batch in loaders['train'].epoch(epoch):
      state, metrics = run['train_step'](state, sharding.shard_batch(batch, mesh), step_rng)
      step = int(state.step)
      bar.update(1)
      if step % config.train.log_every == 0 or step == total:
        metrics = jax.device_get(metrics)
        if not np.isfinite(metrics['loss']):
          raise FloatingPointError(f'non-finite loss {metrics["loss"]} at step {step}')
        bar.set_postfix(loss=f'{metrics["loss"]:.3f}', epoch=epoch + 1)
        writer.write(step, 'train', {**metrics, 'steps_per_sec': step / (time.time() - t0)})
    if (epoch + 1) % config.train.eval_every_epochs and epoch + 1 != config.train.epochs:
      continue
    val = evaluate(run['eval_step'], state, loaders['val'], mesh)
    test = evaluate(run['eval_step'], state, loaders['test'], mesh)
    step = int(state.step)
    writer.write(step, 'val', val)
    writer.write(step, 'test', test)
    record = {'epoch': epoch + 1, 'step': step, 'val': val, 'test': test}
    history.append(record)
    if val[f'{who}/fused'] > best['val']:
      best = {'val': val[f'{who}/fused'], 'epoch': epoch + 1, 'test': test, 'val_all': val}
    bar.write(f'epoch {epoch + 1}/{config.train.epochs}  '
              f'val {val[f"{who}/fused"]:.2f}  test {test[f"{who}/fused"]:.2f}  ({who})')
  bar.close()

  last = history[-1]
  summary = {
      'method': spec.name, 'evaluated': who, 'modalities': list(mods),
      'sources': list(config.data.sources), 'target': config.data.target,
      'epochs': config.train.epochs, 'steps': int(state.step),
      'wall_time_s': time.time() - t0,
      'best_val': {'epoch': best['epoch'], 'val': best['val_all'], 'test': best['test']},
      'last': {'epoch': last['epoch'], 'val': last['val'], 'test': last['test']},
  }
  if is_main:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    print(f'\n== {spec.name}: {"+".join(config.data.sources)} -> {config.data.target} '
          f'({", ".join(mods)}), evaluated model: {who} ==')
    print(_summary_line('  validation (source, last epoch)', last['val'], who, mods))
    print(_summary_line('  test (unseen domain, last epoch)', last['test'], who, mods))
    print(_summary_line(f'  test at best validation (epoch {best["epoch"]})', best['test'],
                        who, mods))
    if spec.ema:
      print(_summary_line('  student test (last epoch)', last['test'], 'student', mods))
    print(f'  summary: {os.path.join(workdir, "summary.json")}')
  writer.close()
  return summary
