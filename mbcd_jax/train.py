"""Training and evaluation loop: ``train_and_evaluate(config, workdir) -> (state, summary)``.

Importable from a notebook (no absl flags). Writes to ``workdir``:
  metrics.jsonl   one JSON object per train log / eval event
  events.*        TensorBoard scalars (tensorboardX)
  summary.json    final summary: best-validation and last-epoch accuracies
  config.json     the resolved config
  checkpoints/    orbax checkpoints (mbcd_jax/checkpoint.py): the latest K + the best-validation
  .lock           held while the run writes (mbcd_jax/runlock.py): a second writer is refused

Never loses work: re-running the same command with the same ``workdir`` resumes from the latest
checkpoint, bit for bit as if never interrupted (the state, the data position and the eval
history are in the checkpoint; the RNG is the base key + the step). SIGTERM saves at the next step
boundary and raises ``preemption.Preempted`` (the CLI exits 75); a non-finite loss stops the run
or skips the update (``config.train.nan_policy``).

Phases, each a function below: ``build`` (model, loaders, jitted steps) -> ``restore_or_init``
(the latest checkpoint, or a fresh state) -> per epoch ``train_epoch``, ``evaluate_epoch``,
``save_checkpoint`` -> ``make_summary``. The loop's bookkeeping (step, best validation, eval
history, skipped steps) is one ``Progress`` object, passed explicitly.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from mbcd_jax import checkpoint as ckpt_lib, config_lib, input_pipeline, models
from mbcd_jax.encoders import batchnorm
from mbcd_jax import preemption, sharding
from mbcd_jax import provenance, runlock, trunk_cache
from mbcd_jax.synthetic import pretrain
from mbcd_jax import step as step_lib
from mbcd_jax.metric_writer import MetricWriter


# ---------------------------------------------------------------- build
@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a run needs, without running it (``build``; for notebooks and tests too).

  Attributes:
    config: the normalised config.
    model, spec, tx: ``models.MultiModalModel``, ``methods.MethodSpec``, the optax optimizer.
    mesh: the device mesh; loaders: {'train', 'val', 'test'} -> ``input_pipeline.Loader``.
    init: ``rng -> TrainState`` (random init, then pretrained encoder weights if configured).
    train_step: jitted ``(state, batch, rng) -> (state, metrics)``, with the ``nan_policy``
      guard (``metrics['nonfinite']``); donates ``state``.
    eval_step: jitted ``(state, batch) -> per-head correct counts and loss sums``.
    pretrained: {modality: {'file', 'digest'}} of the pretrained encoder files ``init`` loads
      (``encoders.convert.weights_digest``; empty without pretrained encoders).
  """
  config: ml_collections.ConfigDict
  model: models.MultiModalModel
  spec: Any
  tx: Any
  mesh: jax.sharding.Mesh
  loaders: dict
  init: Callable
  train_step: Callable
  eval_step: Callable
  pretrained: dict = dataclasses.field(default_factory=dict)

  def abstract_state(self, rng: jax.Array):
    """The TrainState's shapes, dtypes and (replicated) shardings, computing nothing."""
    repl = sharding.replicated(self.mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                        jax.eval_shape(self.init, rng))


def cautions(config: ml_collections.ConfigDict, spec) -> list[str]:
  """Settings of a valid config known to break its method (logged as warnings by ``build``)."""
  ext = spec.extension
  if ext is not None and ext.frozen_bn_caution and config.model.bn_mode == batchnorm.FROZEN:
    return [f'{spec.name}: {ext.frozen_bn_caution}']
  return []


def build(config: ml_collections.ConfigDict, mesh=None) -> Run:
  """Validates ``config`` and builds its model, loaders and jitted steps (see ``Run``)."""
  config = config_lib.normalize(config)
  spec = config_lib.validate(config)
  for caution in cautions(config, spec):
    logging.warning('%s', caution)
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size, mesh)
  sharding.check_batch_size(config.data.eval_batch_size, mesh, 'config.data.eval_batch_size')
  pid, pcount = jax.process_index(), jax.process_count()
  loaders = {s: input_pipeline.make_loader(config, s, process_index=pid, process_count=pcount)
             for s in ('train', 'val', 'test')}
  model = models.build_model(config.model, tuple(config.data.modalities),
                             config.data.num_classes, spec.name)
  tx = step_lib.make_optimizer(config.optim)
  example = input_pipeline.normalize_frames_host(
      {k: v[:1] for k, v in loaders['train'].dataset(0)[0].items()})
  # pretrained='synthetic': the upstream-pretrained file, trained now if not cached.
  model_config = pretrain.resolve(config)
  pretrained = pretrained_files(model_config, tuple(config.data.modalities))
  init = _make_init(model_config if pretrained else None, model, spec, tx, mesh, example)
  train_step, eval_step = jit_steps(config, model, spec, tx, mesh)
  return Run(config=config, model=model, spec=spec, tx=tx, mesh=mesh, loaders=loaders,
             init=init, train_step=train_step, eval_step=eval_step, pretrained=pretrained)


def jit_steps(config, model, spec, tx, mesh) -> tuple[Callable, Callable]:
  """The jitted train step (with the ``nan_policy`` guard; donates the state) and eval step."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  # The dataset's domain index -> position in config.data.sources (-1: not a source).
  domains, sources = tuple(config.data.domains), tuple(config.data.sources)
  position = np.array([sources.index(d) if d in sources else -1 for d in domains], np.int32)

  def guarded_step(state, batch, rng):
    batch = input_pipeline.normalize_frames(batch)   # uint8 frames only (data.normalize_on_device)
    if 'domain' in batch:
      batch = {**batch, step_lib.SOURCE_KEY: jnp.asarray(position)[batch['domain']]}
    new, metrics = step_lib.train_step(state, batch, rng, model=model, spec=spec, tx=tx)
    return step_lib.guard_nonfinite(state, new, metrics,
                                    skip=config.train.nan_policy == 'skip')

  train_step = jax.jit(guarded_step, in_shardings=(repl, data, repl),
                       out_shardings=(repl, repl), donate_argnums=(0,))

  def eval_step(state, batch):
    return step_lib.eval_step(state, input_pipeline.normalize_frames(batch), model=model)

  return train_step, jax.jit(eval_step, in_shardings=(repl, data), out_shardings=repl)


def with_trunk_outputs(run: Run, state) -> Run:
  """``run`` with its frozen trunks' outputs computed once per example where that gives the
  same numbers (``mbcd_jax/trunk_cache.py``; ``config.train.trunk_cache``): loaders carrying
  those outputs, and steps whose model takes them as given. ``run`` itself otherwise."""
  modalities = trunk_cache.candidates(run.config, run.model, run.loaders)
  if not modalities:
    return run
  batch, devices = run.loaders['train'].local_batch, len(run.mesh.local_devices)
  loaders, cached = trunk_cache.precompute(
      run.loaders, run.model, state.student.frozen, modalities, batch,
      device_batches=tuple(max(1, run.loaders[s].local_batch // devices) for s in run.loaders))
  if not cached:
    return run
  model = dataclasses.replace(run.model, given_trunks=cached)
  train_step, eval_step = jit_steps(run.config, model, run.spec, run.tx, run.mesh)
  return dataclasses.replace(run, model=model, loaders=loaders, train_step=train_step,
                             eval_step=eval_step)


def pretrained_files(model_config, modalities: tuple[str, ...]) -> dict[str, dict]:
  """{modality: {'file': path, 'digest': weights digest}} of the pretrained encoder files a
  (resolved) ``config.model`` names."""
  from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
  out = {}
  for m in modalities:
    path = model_config.encoders[m].get('pretrained') or ''
    if path:
      out[m] = {'file': path, 'digest': convert.weights_digest(path)}
  return out


def _make_init(model_config, model, spec, tx, mesh, example) -> Callable:
  """``rng -> TrainState``: random init, then the converted pretrained encoder weights that
  ``model_config`` (a resolved ``config.model``; None: no pretrained encoders) names (loaded on
  the host, so they never become compile-time constants)."""
  repl = sharding.replicated(mesh)
  # The parts the pretrained files replace are only shaped, never drawn (the random draws of a
  # paper-size trunk are most of the init's compile time); the rest is as a full init's.
  loaded = (models.loaded_parts(model, model_config, spec.name) if model_config is not None
            else frozenset())

  @functools.partial(jax.jit, out_shardings=repl)
  def random_init(rng):
    return step_lib.init_state(model, spec, tx, rng, example, loaded=loaded)

  def init(rng):
    state = random_init(rng)
    if model_config is None:
      return state
    params, frozen = models.load_pretrained(model, model_config,
                                            *step_lib.student_variables(state), spec.name)
    # A fresh step-0 state: BN statistics where the BN mode keeps them, the optimizer state
    # for the loaded parameters, the teacher a copy of the whole loaded student. Every leaf
    # gets a buffer of its own: the teacher starts as the student's very arrays, and the
    # train step donates the state (one buffer in two donated leaves is an error).
    state = jax.tree.map(jnp.copy, step_lib.make_state(model, spec, tx, params, frozen,
                                                       state.student.extra_state))
    return jax.device_put(state, repl)

  return init


# ---------------------------------------------------------------- bookkeeping
@dataclasses.dataclass
class Progress:
  """The loop's bookkeeping. All of it but ``pending`` is in every checkpoint's meta.

  Attributes:
    step: optimizer steps taken.
    start_step, start_epoch, start_batch: where this process started (0 or the resumed
      checkpoint's step, and the next batch to train on: ``Loader.epoch(epoch, batch)``).
    best: the best-validation record ``{'val', 'epoch', 'step', 'test', 'val_all'}``
      (``{'val': -1.0}`` before the first eval), chosen by ``select_best`` (the later epoch on
      ties).
    history: one ``{'epoch', 'step', 'val', 'test'}`` per evaluated epoch.
    nonfinite_steps: updates skipped for a non-finite loss (nan_policy='skip').
    pending: ``(step, epoch, device metrics)`` of the newest step not yet read on the host.
  """
  step: int = 0
  start_step: int = 0
  start_epoch: int = 0
  start_batch: int = 0
  best: dict = dataclasses.field(default_factory=lambda: {'val': -1.0})
  history: list = dataclasses.field(default_factory=list)
  nonfinite_steps: int = 0
  pending: tuple | None = None

  @property
  def best_step(self) -> int | None:
    return self.best.get('step')


@dataclasses.dataclass(frozen=True)
class _Loop:
  """What the loop's phases share and never rebind (built once per ``train_and_evaluate``)."""
  run: Run
  ckpt: ckpt_lib.Checkpointer
  writer: MetricWriter
  bar: Any               # tqdm progress bar
  watcher: preemption.Watcher
  step_rng: jax.Array    # base key of every step's RNG (step.py folds in the step)
  steps_per_epoch: int
  total: int             # steps of the whole run
  t0: float              # wall clock when this process's training started


# ---------------------------------------------------------------- workdir and restore
def open_checkpointer(config: ml_collections.ConfigDict, workdir: str) -> ckpt_lib.Checkpointer:
  """Checks ``workdir``, moves an old run aside for resume_mode='restart', opens checkpoints.

  The caller holds the workdir's lock (``runlock.hold``): the move and the checkpointer's
  start-up clean-up would otherwise act on another live run's files.
  """
  ckpt_lib.check_workdir(workdir)
  if config.train.resume_mode == 'restart':
    if jax.process_index() == 0:
      moved = ckpt_lib.move_aside(workdir)
      if moved:
        logging.info('resume_mode=restart: the previous run moved to %s', moved)
    _barrier('restart')
  return ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                               async_save=config.train.async_checkpointing)


def _resume(config, ckpt: ckpt_lib.Checkpointer, abstract_state):
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
  return ckpt.restore(step, abstract_state)


def restore_or_init(run: Run, ckpt: ckpt_lib.Checkpointer, init_rng: jax.Array,
                    step_rng: jax.Array) -> tuple[Any, Progress]:
  """The latest checkpoint's state and bookkeeping, or ``run.init(init_rng)`` and a fresh
  ``Progress``."""
  resumed = _resume(run.config, ckpt, run.abstract_state(init_rng))
  if resumed is None:
    state, progress = run.init(init_rng), Progress()
  else:
    state, meta = resumed
    progress = Progress(best=meta['best'], history=meta['history'],
                        nonfinite_steps=meta.get('nonfinite_steps', 0),
                        start_epoch=meta['data']['epoch'], start_batch=meta['data']['batch'])
    saved_key = np.asarray(meta['rng_key'], np.uint32)
    if not np.array_equal(saved_key, np.asarray(jax.random.key_data(step_rng))):
      logging.warning('the checkpoint\'s base RNG key differs from config.seed=%d\'s (changed '
                      'seed?); continuing with the config\'s', run.config.seed)
    logging.info('resumed from %s: step %d, epoch %d batch %d', ckpt.step_dir(meta['step']),
                 meta['step'], progress.start_epoch, progress.start_batch)
  progress.step = progress.start_step = int(jax.device_get(state.step))
  logging.info('trainable parameters: %d',
               sum(x.size for x in jax.tree.leaves(state.student.params)))
  return state, progress


# ---------------------------------------------------------------- save
def save_checkpoint(loop: _Loop, state, progress: Progress, epoch: int, batch: int):
  """Saves the run at a step boundary: ``(epoch, batch)`` is the next batch to train on."""
  config = loop.run.config
  loop.ckpt.save(progress.step, state, {
      'data': {'epoch': epoch, 'batch': batch, 'steps_per_epoch': loop.steps_per_epoch},
      'rng_key': np.asarray(jax.random.key_data(loop.step_rng)).tolist(), 'seed': config.seed,
      'best': progress.best, 'history': progress.history,
      'nonfinite_steps': progress.nonfinite_steps,
      'config': ckpt_lib.config_to_dict(config)}, best_step=progress.best_step)
  logging.info('checkpoint %s (epoch %d batch %d) in %.3fs', loop.ckpt.step_dir(progress.step),
               epoch, batch, loop.ckpt.last_save_s)


# ---------------------------------------------------------------- train
def _read_pending(loop: _Loop, progress: Progress):
  """Reads the newest step's metrics on the host: stops or counts a non-finite step, logs.

  The loss of step s is read while step s+1 runs (one step in flight, no host stall); it is
  always read before a checkpoint is written, so no checkpoint ever holds a non-finite state.
  """
  if progress.pending is None:
    return
  s, epoch, m = progress.pending
  progress.pending = None
  m = jax.device_get(m)
  tc = loop.run.config.train
  if m['nonfinite']:
    if tc.nan_policy == 'stop':
      loop.ckpt.wait()
      last = loop.ckpt.latest_step()
      raise FloatingPointError(
          f'non-finite loss/gradient at step {s} (loss {m["loss"]}, grad_norm '
          f'{m["grad_norm"]}); stopped (config.train.nan_policy=stop) — the last good '
          f'checkpoint is {loop.ckpt.step_dir(last) if last is not None else "none"}')
    progress.nonfinite_steps += 1
    logging.warning('step %d: non-finite loss/gradient, update skipped (%d so far)', s,
                    progress.nonfinite_steps)
  if s % tc.log_every == 0 or s == loop.total:
    loop.bar.set_postfix(loss=f'{m["loss"]:.3f}', epoch=epoch + 1)
    rate = (s - progress.start_step) / (time.time() - loop.t0)
    loop.writer.write(s, 'train', {**m, 'nonfinite_steps': progress.nonfinite_steps,
                                   'steps_per_sec': rate})


def train_epoch(loop: _Loop, state, progress: Progress, epoch: int, first: int):
  """Trains ``epoch`` from its batch ``first``; checkpoints every ``checkpoint_every_steps``.

  Returns:
    (state, stop): ``stop`` if a preemption notice came on the epoch's last step (the
    epoch-end checkpoint follows the eval).
  Raises:
    preemption.Preempted: a notice mid-epoch, after its checkpoint is saved.
  """
  run, tc = loop.run, loop.run.config.train
  stop = False
  for b, batch in enumerate(run.loaders['train'].epoch(epoch, first), start=first + 1):
    state, metrics = run.train_step(state, sharding.shard_batch(batch, run.mesh), loop.step_rng)
    progress.step += 1
    loop.bar.update(1)
    _read_pending(loop, progress)
    progress.pending = (progress.step, epoch, metrics)
    stop = loop.watcher.should_stop(progress.step)   # every step, on every process
    if b == loop.steps_per_epoch:
      break
    if stop or (tc.checkpoint_every_steps and progress.step % tc.checkpoint_every_steps == 0):
      _read_pending(loop, progress)
      save_checkpoint(loop, state, progress, epoch, b)
    if stop:
      raise preemption.Preempted(progress.step, loop.ckpt.step_dir(progress.step))
  _read_pending(loop, progress)
  return state, stop


# ---------------------------------------------------------------- evaluate
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


EVAL_LINES = 10    # printed eval lines per run (every eval is logged)
SELECTION_RULE = ('highest source-validation accuracy of the evaluated model (fused head); '
                  'the later epoch on ties')


def select_best(best: dict, candidate: dict) -> dict:
  """The authors' model-selection rule: ``candidate`` replaces ``best`` when its validation
  accuracy is at least as high (``>=``), so among equal accuracies the *later* epoch is kept.

  Every peer's script (RNA-Net, SimMMDG, MOOSA, CMRF) and the MBCD port (``train_MBCD.py``) test
  ``cur_acc >= best_acc``; on small validation sets ties are the rule (a model at 100% stays
  there for many epochs), so ``>`` would report the first of them instead.

  Args:
    best: the record so far, ``{'val': float, ...}`` (``{'val': -1.0}`` before any eval).
    candidate: this epoch's record, same keys.
  Returns:
    the record to keep (one of the two, not a copy).
  """
  return candidate if candidate['val'] >= best['val'] else best


def evaluate_epoch(loop: _Loop, state, progress: Progress, epoch: int):
  """Val and test metrics after ``epoch`` (0-based): logged, appended to the history, and the
  best-validation record updated (on the evaluated model's fused val accuracy)."""
  run, who, step = loop.run, loop.run.spec.evaluated, progress.step
  val = evaluate(run.eval_step, state, run.loaders['val'], run.mesh)
  test = evaluate(run.eval_step, state, run.loaders['test'], run.mesh)
  loop.writer.write(step, 'val', val)
  loop.writer.write(step, 'test', test)
  progress.history.append({'epoch': epoch + 1, 'step': step, 'val': val, 'test': test})
  progress.best = select_best(progress.best, {'val': val[f'{who}/fused'], 'epoch': epoch + 1,
                                              'step': step, 'test': test, 'val_all': val})
  epochs = run.config.train.epochs
  if printed_epoch(epoch + 1, epochs):
    loop.bar.write(f'epoch {epoch + 1}/{epochs}  val {val[f"{who}/fused"]:.2f}'
                   f'  test {test[f"{who}/fused"]:.2f}  ({who})')


def printed_epoch(epoch: int, epochs: int, lines: int = EVAL_LINES) -> bool:
  """Whether 1-based ``epoch``'s eval gets a printed line: about ``lines`` evenly spaced ones
  and the last (every epoch is in metrics.jsonl and TensorBoard; a 100-epoch run prints 10)."""
  return epoch % max(1, -(-epochs // lines)) == 0 or epoch == epochs


# ---------------------------------------------------------------- the loop
def _train_epochs(loop: _Loop, state, progress: Progress):
  """Every remaining epoch: train, evaluate (every ``eval_every_epochs`` and the last), save."""
  tc = loop.run.config.train
  for epoch in range(progress.start_epoch, tc.epochs):
    first = progress.start_batch if epoch == progress.start_epoch else 0
    state, stop = train_epoch(loop, state, progress, epoch, first)
    if (epoch + 1) % tc.eval_every_epochs == 0 or epoch + 1 == tc.epochs:
      evaluate_epoch(loop, state, progress, epoch)
    save_checkpoint(loop, state, progress, epoch + 1, 0)
    # A notice that came during the eval: multi-process runs only act on agreed steps.
    stop = stop or (jax.process_count() == 1 and loop.watcher.requested)
    if stop and epoch + 1 < tc.epochs:
      raise preemption.Preempted(progress.step, loop.ckpt.step_dir(progress.step))
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> tuple[Any, dict[str, Any]]:
  """Trains ``config``'s method, evaluates every ``eval_every_epochs`` on val and test.

  Resumes from ``workdir/checkpoints`` when there is a checkpoint (see the module docstring).

  Returns:
    (the final TrainState, the final summary, also written to ``workdir/summary.json``).
  Raises:
    preemption.Preempted: SIGTERM (or JAX's preemption notice); the checkpoint is on disk.
    FloatingPointError: non-finite loss with nan_policy='stop'; the last good checkpoint is kept.
    checkpoint.CheckpointError: an unusable workdir / checkpoint, a failed save, or another
      run writing the workdir (one line; that run's pid, host and start time).
  """
  run = build(config)
  _log_setup(run)
  # Before the workdir is touched (restart's move, the checkpointer's clean-up of unfinished
  # saves) and until the last save is on disk: one writer per workdir (runlock.py).
  with runlock.hold(workdir):
    return _train_and_evaluate(run, workdir)


def _train_and_evaluate(run: Run, workdir: str) -> tuple[Any, dict[str, Any]]:
  """``train_and_evaluate`` once the workdir's lock is held."""
  config, tc, is_main = run.config, run.config.train, jax.process_index() == 0
  ckpt = open_checkpointer(config, workdir)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state, progress = restore_or_init(run, ckpt, init_rng, step_rng)
  run = with_trunk_outputs(run, state)
  writer = MetricWriter(workdir, enabled=is_main, resume_step=progress.start_step)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  steps_per_epoch = run.loaders['train'].num_batches
  total = steps_per_epoch * tc.epochs
  watcher = preemption.Watcher()
  bar = tqdm.tqdm(total=total, initial=progress.step, disable=not (is_main and tc.progress),
                  unit='step', dynamic_ncols=True)
  loop = _Loop(run, ckpt, writer, bar, watcher, step_rng, steps_per_epoch, total, time.time())
  try:
    state = _train_epochs(loop, state, progress)
  except preemption.Preempted:
    ckpt.wait()
    logging.warning('preempted at step %d: checkpoint %s written', progress.step,
                    ckpt.step_dir(progress.step))
    raise
  finally:
    _close(loop)
  summary = make_summary(run, progress, time.time() - loop.t0)
  if is_main:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    _print_summary(run, progress, workdir)
  return state, summary


def _log_setup(run: Run):
  logging.info('method %s: %s', run.spec.name, run.spec)
  logging.info('devices: %d (%s), processes: %d', run.mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())
  logging.info('environment: %s', provenance.environment())
  for s, ld in run.loaders.items():
    logging.info('%s split: %d examples, %d batches', s, ld.num_examples, ld.num_batches)
  for m, r in run.pretrained.items():
    logging.info('pretrained %s encoder: %s (weights digest %s)', m, r['file'], r['digest'])


def _close(loop: _Loop):
  loop.bar.close()
  loop.watcher.close()
  loop.writer.close()
  try:
    loop.ckpt.close()
  except ckpt_lib.CheckpointError as e:  # do not hide the exception that got us here
    logging.error('%s', e)


# ---------------------------------------------------------------- summary
def make_summary(run: Run, progress: Progress, wall_time_s: float) -> dict[str, Any]:
  """The run's result: best-validation and last-epoch val/test metrics, and how it ran."""
  config, best, last = run.config, progress.best, progress.history[-1]
  return {
      'method': run.spec.name, 'evaluated': run.spec.evaluated,
      'modalities': list(config.data.modalities),
      'sources': list(config.data.sources), 'target': config.data.target,
      'epochs': config.train.epochs, 'steps': progress.step,
      'wall_time_s': wall_time_s, 'resumed_from_step': progress.start_step,
      'nonfinite_steps': progress.nonfinite_steps,
      'best_val': {'epoch': best['epoch'], 'val': best['val_all'], 'test': best['test']},
      'selection': SELECTION_RULE,
      'last': {'epoch': last['epoch'], 'val': last['val'], 'test': last['test']},
      'pretrained': {m: r['digest'] for m, r in run.pretrained.items()},
      'trunk_outputs_precomputed': list(run.model.given_trunks),
      'environment': provenance.environment(),
  }


def _summary_line(prefix: str, metrics: dict, who: str, modalities) -> str:
  parts = [f'fused {metrics[f"{who}/fused"]:.2f}']
  parts += [f'{m} {metrics[f"{who}/{m}"]:.2f}' for m in modalities]
  return f'{prefix}: ' + ', '.join(parts)


def _print_summary(run: Run, progress: Progress, workdir: str):
  config, who, mods = run.config, run.spec.evaluated, tuple(run.config.data.modalities)
  best, last = progress.best, progress.history[-1]
  print(f'\n== {run.spec.name}: {"+".join(config.data.sources)} -> {config.data.target} '
        f'({", ".join(mods)}), evaluated model: {who} ==')
  print(_summary_line('  validation (source, last epoch)', last['val'], who, mods))
  print(_summary_line('  test (unseen domain, last epoch)', last['test'], who, mods))
  print(_summary_line(f'  test at best validation (epoch {best["epoch"]}, the later on ties)',
                      best['test'], who, mods))
  if run.spec.has_teacher:
    other = 'student' if who == 'teacher' else 'teacher'
    print(_summary_line(f'  {other} test (last epoch)', last['test'], other, mods))
  print(f'  summary: {os.path.join(workdir, "summary.json")}')


def _barrier(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'mbcd_jax:{name}')
