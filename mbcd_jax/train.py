"""Training and evaluation loop: ``train_and_evaluate(config, workdir)``.

Importable from a notebook (no absl flags). Writes to ``workdir``:
  metrics.jsonl   one JSON object per train log / eval event
  events.*        TensorBoard scalars (tensorboardX)
  summary.json    final summary: best-validation and last-epoch accuracies
  config.json     the resolved config
  checkpoints/    orbax checkpoints (mbcd_jax/checkpoint.py): the latest K + the best-validation

Never loses work: re-running the same command with the same ``workdir`` resumes from the latest
checkpoint, bit for bit as if never interrupted (the state, the data position and the eval
history are in the checkpoint; the RNG is the base key + the step). SIGTERM saves at the next step
boundary and raises ``preemption.Preempted`` (the CLI exits 75); a non-finite loss stops the run
or skips the update (``config.train.nan_policy``).
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

from mbcd_jax import checkpoint as ckpt_lib, config_lib, input_pipeline, models, preemption, sharding
from mbcd_jax import step as step_lib


def truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps the rows of ``path`` with ``step <= last_step`` (atomically). Returns rows dropped.

  A torn last line (a kill mid-write) is dropped too."""
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
        ok = line.endswith('\n') and int(row['step']) <= last_step
      except (ValueError, KeyError, TypeError):
        ok = False
      if ok:
        keep.append(line)
      else:
        dropped += 1
  if dropped:
    with open(path + '.tmp', 'w') as f:
      f.writelines(keep)
    os.replace(path + '.tmp', path)
    logging.info('%s: dropped %d rows after step %d (recomputed by the resumed run)',
                 path, dropped, last_step)
  return dropped


class MetricWriter:
  """JSON lines + TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    """``resume_step``: the step the run (re)starts from. Rows after it were written by a run
    that was killed before its next checkpoint; the resumed run recomputes them, so they are
    dropped (the file then equals an uninterrupted run's, and TensorBoard purges them too)."""
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, 'metrics.jsonl')
      truncate_jsonl(path, resume_step)
      self._jsonl = open(path, 'a')
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(workdir, purge_step=resume_step + 1)
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
    ``train_step(state, batch, rng)`` (with the ``nan_policy`` guard: metrics['nonfinite']),
    ``eval_step(state, batch)`` and ``init(rng)``.
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
  def random_init(rng):
    return step_lib.init_state(model, spec, tx, rng, example)

  pretrained = any(config.model.encoders[m].get('pretrained') for m in model.modalities)

  def init(rng):
    """Random init, then converted pretrained encoder weights where the config names them
    (loaded on the host, so they never become compile-time constants)."""
    state = random_init(rng)
    if not pretrained:
      return state
    params, frozen = models.load_pretrained(model, config.model,
                                            *step_lib.student_variables(state))
    # A fresh step-0 state: BN statistics where the BN mode keeps them, the optimizer state
    # for the loaded parameters, the teacher a copy of the whole loaded student. Every leaf
    # gets a buffer of its own: the teacher starts as the student's very arrays, and the
    # train step donates the state (one buffer in two donated leaves is an error).
    state = jax.tree.map(jnp.copy, step_lib.make_state(model, spec, tx, params, frozen))
    return jax.device_put(state, repl)

  if config.train.nan_policy not in ('stop', 'skip'):
    raise ValueError("config.train.nan_policy must be 'stop' or 'skip', got "
                     f'{config.train.nan_policy!r}')
  skip = config.train.nan_policy == 'skip'

  def guarded_step(state, batch, rng):
    new, metrics = step_lib.train_step(state, batch, rng, model=model, spec=spec, tx=tx)
    return step_lib.guard_nonfinite(state, new, metrics, skip=skip)

  train_step = jax.jit(guarded_step, in_shardings=(repl, data, repl),
                       out_shardings=(repl, repl), donate_argnums=(0,))
  eval_step = jax.jit(functools.partial(step_lib.eval_step, model=model),
                      in_shardings=(repl, data), out_shardings=repl)
  return dict(config=config, model=model, spec=spec, tx=tx, mesh=mesh, loaders=loaders,
              init=init, train_step=train_step, eval_step=eval_step)


def _summary_line(prefix: str, metrics: dict, who: str, modalities) -> str:
  parts = [f'fused {metrics[f"{who}/fused"]:.2f}']
  parts += [f'{m} {metrics[f"{who}/{m}"]:.2f}' for m in modalities]
  return f'{prefix}: ' + ', '.join(parts)


def _resume(config, workdir: str, ckpt: ckpt_lib.Checkpointer, abstract_state):
  """The latest checkpoint's (state, meta) if there is one to resume from, else None.

  Raises:
    CheckpointError: the config differs (resume_mode='strict'), the checkpoint is unusable.
  """
  step = ckpt.latest_step()
  if step is None:
    return None
  meta = ckpt.read_meta(step)
  diff = ckpt_lib.config_diff(meta['config'], ckpt_lib.config_to_dict(config))
  if diff:
    where = os.path.join(ckpt.step_dir(step), 'meta')
    if config.train.resume_mode == 'strict':
      raise ckpt_lib.CheckpointError(
          f'{where}: the config differs from the checkpoint\'s in {len(diff)} key(s): '
          f'{"; ".join(diff)} — pass --config.train.resume_mode=allow_changes to resume with '
          'the new values, or =restart to start over (the old run is moved aside)')
    logging.warning('resuming %s with a changed config: %s', where, '; '.join(diff))
  state, meta = ckpt.restore(step, abstract_state)
  return state, meta


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config``'s method, evaluates every ``eval_every_epochs`` on val and test.

  Resumes from ``workdir/checkpoints`` when there is a checkpoint (see the module docstring).

  Returns:
    The final summary (also written to ``workdir/summary.json``).
  Raises:
    preemption.Preempted: SIGTERM (or JAX's preemption notice); the checkpoint is on disk.
    FloatingPointError: non-finite loss with nan_policy='stop'; the last good checkpoint is kept.
    checkpoint.CheckpointError: an unusable workdir / checkpoint, or a failed save (one line).
  """
  # ---------------------------------------------------------------- set-up
  run = build(config)
  config, spec, mesh, loaders = run['config'], run['spec'], run['mesh'], run['loaders']
  tc = config.train
  if tc.resume_mode not in ckpt_lib.RESUME_MODES:
    raise ValueError(f'config.train.resume_mode must be one of {ckpt_lib.RESUME_MODES}, got '
                     f'{tc.resume_mode!r}')
  mods = tuple(config.data.modalities)
  is_main = jax.process_index() == 0
  logging.info('method %s: %s', spec.name, spec)
  logging.info('devices: %d (%s), processes: %d', mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())
  for s, ld in loaders.items():
    logging.info('%s split: %d examples, %d batches', s, ld.num_examples, ld.num_batches)

  # ---------------------------------------------------------------- workdir and checkpoints
  ckpt_lib.check_workdir(workdir)
  if tc.resume_mode == 'restart':
    if is_main:
      moved = ckpt_lib.move_aside(workdir)
      if moved:
        logging.info('resume_mode=restart: the previous run moved to %s', moved)
    _barrier('restart')
  ckpt = ckpt_lib.Checkpointer(workdir, keep=tc.keep_checkpoints,
                               async_save=tc.async_checkpointing)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  repl = sharding.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                          jax.eval_shape(run['init'], init_rng))
  steps_per_epoch = loaders['train'].num_batches
  total = steps_per_epoch * tc.epochs
  who = spec.evaluated
  best, history, skipped = {'val': -1.0}, [], 0
  start_epoch, start_batch = 0, 0
  resumed = _resume(config, workdir, ckpt, abstract)
  if resumed is None:
    state = run['init'](init_rng)
  else:
    state, meta = resumed
    best, history, skipped = meta['best'], meta['history'], meta.get('nonfinite_steps', 0)
    start_epoch, start_batch = meta['data']['epoch'], meta['data']['batch']
    saved_key = np.asarray(meta['rng_key'], np.uint32)
    if not np.array_equal(saved_key, np.asarray(jax.random.key_data(step_rng))):
      logging.warning('the checkpoint\'s base RNG key differs from config.seed=%d\'s (changed '
                      'seed?); continuing with the config\'s', config.seed)
    logging.info('resumed from %s: step %d, epoch %d batch %d', ckpt.step_dir(meta['step']),
                  meta['step'], start_epoch, start_batch)
  step = start_step = int(jax.device_get(state.step))
  best_step = best.get('step')
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('trainable parameters: %d', n_params)

  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  def save(epoch: int, batch: int):
    """The run at a step boundary: ``(epoch, batch)`` is the next batch to train on."""
    ckpt.save(step, state, {
        'data': {'epoch': epoch, 'batch': batch, 'steps_per_epoch': steps_per_epoch},
        'rng_key': np.asarray(jax.random.key_data(step_rng)).tolist(), 'seed': config.seed,
        'best': best, 'history': history, 'nonfinite_steps': skipped,
        'config': ckpt_lib.config_to_dict(config)}, best_step=best_step)
    logging.info('checkpoint %s (epoch %d batch %d) in %.3fs', ckpt.step_dir(step), epoch,
                 batch, ckpt.last_save_s)

  # ---------------------------------------------------------------- loop
  # The loss of step s is read while step s+1 runs (one step in flight, no host stall); it is
  # always read before a checkpoint is written, so no checkpoint ever holds a non-finite state.
  pending = None   # (step, epoch, device metrics) of the newest step not yet read

  def drain():
    nonlocal pending, skipped
    if pending is None:
      return
    s, ep, m = pending
    pending = None
    m = jax.device_get(m)
    if m['nonfinite']:
      if tc.nan_policy == 'stop':
        ckpt.wait()
        last = ckpt.latest_step()
        raise FloatingPointError(
            f'non-finite loss/gradient at step {s} (loss {m["loss"]}, grad_norm '
            f'{m["grad_norm"]}); stopped (config.train.nan_policy=stop) — the last good '
            f'checkpoint is {ckpt.step_dir(last) if last is not None else "none"}')
      skipped += 1
      logging.warning('step %d: non-finite loss/gradient, update skipped (%d so far)', s,
                      skipped)
    if s % tc.log_every == 0 or s == total:
      bar.set_postfix(loss=f'{m["loss"]:.3f}', epoch=ep + 1)
      writer.write(s, 'train', {**m, 'nonfinite_steps': skipped,
                                'steps_per_sec': (s - start_step) / (time.time() - t0)})

  watcher = preemption.Watcher()
  bar = tqdm.tqdm(total=total, initial=step, disable=not (is_main and tc.progress),
                  unit='step', dynamic_ncols=True)
  t0 = time.time()
  try:
    for epoch in range(start_epoch, tc.epochs):
      first = start_batch if epoch == start_epoch else 0
      stop = False
      for b, batch in enumerate(loaders['train'].epoch(epoch, first), start=first + 1):
        state, metrics = run['train_step'](state, sharding.shard_batch(batch, mesh), step_rng)
        step += 1
        bar.update(1)
        drain()
        pending = (step, epoch, metrics)
        stop = watcher.should_stop(step)   # every step, on every process
        if b == steps_per_epoch:
          break                            # the epoch-end checkpoint follows the eval
        if stop or (tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0):
          drain()
          save(epoch, b)
        if stop:
          raise preemption.Preempted(step, ckpt.step_dir(step))
      drain()
      if (epoch + 1) % tc.eval_every_epochs == 0 or epoch + 1 == tc.epochs:
        val = evaluate(run['eval_step'], state, loaders['val'], mesh)
        test = evaluate(run['eval_step'], state, loaders['test'], mesh)
        writer.write(step, 'val', val)
        writer.write(step, 'test', test)
        history.append({'epoch': epoch + 1, 'step': step, 'val': val, 'test': test})
        if val[f'{who}/fused'] > best['val']:
          best = {'val': val[f'{who}/fused'], 'epoch': epoch + 1, 'step': step, 'test': test,
                  'val_all': val}
          best_step = step
        bar.write(f'epoch {epoch + 1}/{tc.epochs}  val {val[f"{who}/fused"]:.2f}  '
                  f'test {test[f"{who}/fused"]:.2f}  ({who})')
      save(epoch + 1, 0)
      # A notice that came during the eval: multi-process runs only act on agreed steps.
      stop = stop or (jax.process_count() == 1 and watcher.requested)
      if stop and epoch + 1 < tc.epochs:
        raise preemption.Preempted(step, ckpt.step_dir(step))
  except preemption.Preempted:
    ckpt.wait()
    logging.warning('preempted at step %d: checkpoint %s written', step, ckpt.step_dir(step))
    raise
  finally:
    bar.close()
    watcher.close()
    writer.close()
    try:
      ckpt.close()
    except ckpt_lib.CheckpointError as e:  # do not hide the exception that got us here
      logging.error('%s', e)

  last = history[-1]
  summary = {
      'method': spec.name, 'evaluated': who, 'modalities': list(mods),
      'sources': list(config.data.sources), 'target': config.data.target,
      'epochs': tc.epochs, 'steps': step,
      'wall_time_s': time.time() - t0, 'resumed_from_step': start_step,
      'nonfinite_steps': skipped,
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
  return summary


def _barrier(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'mbcd_jax:{name}')
