"""The input pipeline: a random-access source per split -> grain -> this process's batches.

One path for every data source: the embedded synthetic benchmark (``data/synthetic.py``) and
clips of a prepared store (``data/pipeline.py``) are both a random-access source of records plus
a per-example transform, and the same ``Loader`` orders, slices, transforms and batches them.

Splits follow the protocol: 'train' = the source domains' train splits, 'val' = the source
domains' test splits (in-domain model selection), 'test' = the unseen target domain (HAC: the
whole domain, as SimMMDG and the port, unless ``data.hac_test_split_only``; EPIC: its test split).

Batches are dicts of numpy arrays: modality -> float32 ``[b, ...]`` (model-ready; video and flow
uint8 with ``data.normalize_on_device``, for ``normalize_frames``), 'label' and 'domain' int32
``[b]``, and for eval 'mask' float32 ``[b]`` (0 for padding). ``b = B / P`` is
this process's share of the global batch ``B``: process p of P gets rows ``[p*b, (p+1)*b)`` of
every global batch. The order and every example's randomness depend on (seed, epoch, position
in the epoch's global order) only, so P processes together see exactly the global batches of
one process, and worker processes change nothing either.

A method that trains on two views of each clip (``Extension.views``, NEL's) gets training
batches of ``views * B`` rows, ``[view 1 of the B clips; view 2 of the same B clips; ...]``,
labels and domains repeated: each view is the train transform with randomness of its own
(``example_rng``'s ``view``). Where the transform is not random (the embedded synthetic
benchmark) the views are the same example, bit for bit.
"""
import atexit
import dataclasses
import functools
import gc
import weakref
from typing import Any, Callable, Iterator

import grain
import numpy as np

from mbcd_jax import config_lib, methods
from mbcd_jax.data import synthetic
from mbcd_jax.data import pipeline as prepared
from mbcd_jax.data import transforms
from mbcd_jax.errors import ConfigError


def normalize_record(rec: dict, frames: bool = True) -> dict:
  """Decoded record -> model-ready example (the deterministic part of the real test transform):
  RGB (x - mean) / std, flow (x - 128) / 128, audio per-sample z-score with a channel axis.
  ``frames`` False: RGB and flow stay uint8 (``normalize_frames`` on the device)."""
  out = {}
  for k, v in rec.items():
    if k == 'video' and frames:
      out[k] = transforms.normalize_rgb(v)
    elif k == 'flow' and frames:
      out[k] = transforms.normalize_flow(v)
    elif k == 'audio':
      a = v.astype(np.float32)
      out[k] = ((a - a.mean()) / (a.std() + 1e-8))[..., None]
    else:
      out[k] = v
  return out


def normalize_frames(batch: dict) -> dict:
  """The device half of ``data.normalize_on_device``: uint8 'video' ``[..., 3]`` / 'flow'
  ``[..., 2]`` -> float32, gathered from the host normalisation's own float32 tables, so the
  values are the host's bit for bit. Anything else, float frames included, passes unchanged
  (the dtype is known when tracing: with the option off this adds nothing to the step)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top  (grain workers never call it)
  out = dict(batch)
  for k, lut in (('video', transforms.RGB_LUT), ('flow', transforms.FLOW_LUT)):
    x = out.get(k)
    if x is not None and x.dtype == np.uint8:
      out[k] = jnp.asarray(lut)[jnp.asarray(x).astype(jnp.int32), jnp.arange(lut.shape[1])]
  return out


def normalize_frames_host(batch: dict) -> dict:
  """``normalize_frames`` in numpy, for batches used on the host (the analyses)."""
  out = dict(batch)
  for k, fn in (('video', transforms.normalize_rgb), ('flow', transforms.normalize_flow)):
    if k in out and out[k].dtype == np.uint8:
      out[k] = fn(out[k])
  return out


def example_rng(seed: int, epoch: int, position: int, view: int = 0) -> np.random.Generator:
  """The randomness of the example at ``position`` of the epoch's global order (its ``view``-th
  view: 0 for the one view of most methods)."""
  return np.random.default_rng([seed, epoch, position, 1] + ([view] if view else []))


class _EpochExamples:
  """This process's examples of one epoch, random access: ``view[i]`` -> example dict.

  Local element i sits at global position ``positions[i]`` of the epoch and reads record
  ``order[i]`` of the source; eval padding rows carry ``mask`` 0.
  """

  def __init__(self, source, transform: Callable, positions: np.ndarray, order: np.ndarray,
               valid: np.ndarray | None, seed: int, epoch: int, random_transform: bool,
               views: int = 1):
    self._source, self._transform = source, transform
    self._positions, self._order, self._valid = positions, order, valid
    self._seed, self._epoch, self._random = seed, epoch, random_transform
    self._views = views

  def __len__(self) -> int:
    return len(self._order)

  def __getitem__(self, i: int) -> dict:
    rec = dict(self._source[int(self._order[i])])
    if self._valid is not None:
      rec['mask'] = np.float32(self._valid[i])
    if self._views > 1:   # each key [views, ...]; ``_views_first`` makes the batch's rows
      out = [self._one(dict(rec), i, v) for v in range(self._views)]
      return {k: np.stack([o[k] for o in out]) for k in out[0]}
    return self._one(rec, i)

  def _one(self, rec: dict, i: int, view: int = 0) -> dict:
    if self._random:
      return self._transform(rec, example_rng(self._seed, self._epoch, int(self._positions[i]),
                                              view))
    return self._transform(rec)


def _views_first(batch: dict) -> dict:
  """``[b, V, ...]`` -> ``[V b, ...]``: view 1 of the b clips, then view 2 of the same b, ..."""
  return {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)).reshape((-1,) + v.shape[2:])
          for k, v in batch.items()}


@dataclasses.dataclass
class Loader:
  """Epoch iterator over one split for this process.

  Attributes:
    source: random-access source of records (``len``, ``source[i]`` -> dict of numpy arrays).
    transform: record -> model-ready example; ``fn(record, rng)`` if ``random_transform``.
    global_batch: batch size summed over all processes.
    train: a new order every epoch, last partial batch dropped; else fixed order, padded.
    seed: order and augmentation seed.
    num_workers: grain worker processes (0 = in-process).
    random_transform: call ``transform(record, example_rng(seed, epoch, position))``.
    read_threads: threads running the per-example transform in each process; the read-ahead
      is as many batches (a paper-sized real batch is ~300 MB).
    views: transformed views per clip in a training batch (the method's ``Extension.views``):
      a batch holds ``views * local_batch`` rows, view-major (module docstring).
  """
  source: Any
  transform: Callable
  global_batch: int
  train: bool
  seed: int = 0
  process_index: int = 0
  process_count: int = 1
  num_workers: int = 0
  random_transform: bool = False
  read_threads: int = 2
  views: int = 1

  def __post_init__(self):
    if self.global_batch % self.process_count:
      raise ConfigError(f'batch size {self.global_batch} is not divisible by the number of '
                       f'processes {self.process_count}')
    if self.train and len(self.source) < self.global_batch:
      raise ConfigError(f'the training split has {len(self.source)} examples, fewer than one '
                       f'batch of {self.global_batch}')
    if self.read_threads < 1:
      raise ConfigError(f'config.data.read_threads must be at least 1, got {self.read_threads}')
    if self.views > 1 and (not self.train or self.process_count > 1):
      # Each process stacks its own rows' views: with several processes the global batch
      # would interleave them, not be [view 1; view 2].
      raise ConfigError(f'a method with {self.views} views per clip runs its training split in '
                        f'one process (got {self.process_count}); evaluation has one view')

  @property
  def num_examples(self) -> int:
    return len(self.source)

  @property
  def num_batches(self) -> int:
    n, b = len(self.source), self.global_batch
    return n // b if self.train else -(-n // b)

  @property
  def local_batch(self) -> int:
    return self.global_batch // self.process_count

  def _examples(self, epoch: int) -> _EpochExamples:
    n, b, lb = len(self.source), self.global_batch, self.local_batch
    # Global positions of this process's rows: [p*lb, (p+1)*lb) of every global batch.
    positions = np.arange(self.num_batches * b).reshape(-1, b)
    positions = positions[:, self.process_index * lb:(self.process_index + 1) * lb].reshape(-1)
    if self.train:
      order = np.random.default_rng([self.seed, epoch]).permutation(n)[positions]
      valid = None
    else:   # in order; the last batch padded with record 0
      order = np.where(positions < n, positions, 0)
      valid = (positions < n).astype(np.float32)
    return _EpochExamples(self.source, self.transform, positions, order, valid, self.seed,
                          epoch, self.random_transform, self.views)

  def dataset(self, epoch: int = 0) -> grain.MapDataset:
    """The epoch's batches as a random-access grain dataset (``ds[k:]`` resumes mid-epoch)."""
    ds = grain.MapDataset.source(self._examples(epoch)).batch(self.local_batch,
                                                              drop_remainder=self.train)
    return ds.map(_views_first) if self.views > 1 else ds

  def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[dict]:
    """Iterates over the epoch's batches, starting at batch ``start_batch``. The iterator has
    ``get_state()`` / ``set_state()`` (grain) to resume mid-epoch too."""
    ds = self.dataset(epoch)[start_batch:].to_iter_dataset(
        grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=self.read_threads))
    if self.num_workers > 0:
      _prepare_worker_processes()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                       per_worker_buffer_size=1))
      it = iter(ds)
      # Still running at exit (an epoch left part way: preemption, a benchmark, an error), its
      # workers and read-ahead threads hold batches in shared memory: close it first.
      atexit.register(_close_if_alive, weakref.ref(it))
      return it
    return iter(ds)


@functools.cache
def _prepare_worker_processes() -> None:
  """Once per process, before grain starts worker processes.

  - grain's workers read absl flags; outside an absl app (notebooks, tests) nothing has parsed
    them and grain would fail with UnparsedFlagAccessError: mark them parsed (their defaults),
    as absl.app would.
  - Workers hand batches over in shared memory (/dev/shm), unlinked by the receiving process,
    from a background thread pool, when a batch is garbage collected. At exit that is not
    enough (see ``_finish_shared_memory_unlinks``); its handler is registered here, before any
    iterator's ``_close_if_alive``, so it runs after them (atexit runs last-registered first),
    and before multiprocessing's own exit handler, registered when it was imported.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  atexit.register(_finish_shared_memory_unlinks)


def _close_if_alive(ref: weakref.ref) -> None:
  """Closes a worker-process iterator still alive at exit.

  Left to multiprocessing's exit handler, the workers are stopped while grain's read-ahead
  threads keep taking batches out of their queues; those batches were never unlinked (the
  resource tracker warned of leaked shared_memory objects, and removed them only later, or
  never when the process group was killed). Closing joins the threads and unlinks what the
  workers had queued.
  """
  it = ref()
  if it is not None:
    it.close()


class _Detached(np.ndarray):
  """A plain array type for grain shared-memory batches already unlinked at exit: the same
  memory layout, without the ``__del__`` that would fail once modules are torn down."""


def _finish_shared_memory_unlinks() -> None:
  """Unlinks every shared-memory batch of this process before the interpreter exits."""
  try:
    from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top
    arrays = shared_memory_array.SharedMemoryArray
    pool = arrays._del_thread_pool  # pylint: disable=protected-access
  except (ImportError, AttributeError):   # another grain version: nothing to finish
    return
  gc.collect()   # batches dropped by the closed iterators: their unlinks are queued now
  if pool is not None:
    arrays._disable_async_del()   # pylint: disable=protected-access  (later ones: synchronous)
    pool.close()
    pool.join()
  # Batches still referenced now are never deleted in order: unlink their blocks (the mappings
  # stay valid until the process ends) and detach the arrays, whose __del__ would run during
  # interpreter teardown, when the mmap module it needs is gone (an AttributeError per array).
  names = set()
  for obj in gc.get_objects():
    if isinstance(obj, arrays):
      shm = getattr(obj, 'shm', None)
      if getattr(obj, '_unlink_on_del', False) and shm is not None and shm.name not in names:
        names.add(shm.name)
        try:
          shm.unlink()
        except FileNotFoundError:
          pass
      obj._unlink_on_del = False  # pylint: disable=protected-access  (views share the block)
      obj.__class__ = _Detached


def synthetic_spec(config) -> synthetic.SyntheticSpec:
  """``config.data`` (+ ``config.data.synthetic`` knobs) -> SyntheticSpec."""
  knobs = config.data.synthetic
  knobs = knobs.to_dict() if knobs is not None else {}
  for k in ('video_shape', 'flow_shape', 'audio_shape'):
    if k in knobs:
      knobs[k] = tuple(knobs[k])
  return synthetic.SyntheticSpec(num_classes=config.data.num_classes,
                                 domains=tuple(config.data.domains), **knobs)


def make_loader(config, split: str, *, process_index: int = 0, process_count: int = 1) -> Loader:
  """The Loader of ``split`` in {'train', 'val', 'test'} for ``config``.

  ``data.source`` 'synthetic': the embedded benchmark, records normalised deterministically;
  'prepared': the store at ``data.dir`` with the paper's clip transforms (``data.clip``), random
  for 'train'. ``data.normalize_on_device``: video / flow come as uint8, for
  ``normalize_frames`` in the jitted step. 'train' gives ``config.method.name``'s views per
  clip (``methods.train_views``).
  """
  if split not in ('train', 'val', 'test'):
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
  d = config.data
  train = split == 'train'
  if d.source == 'synthetic':
    if split == 'test':
      domains, sub = (d.target,), 'test' if config_lib.target_test_split_only(d) else 'all'
    else:
      domains, sub = tuple(d.sources), 'train' if train else 'test'
    source = synthetic.SyntheticSource(synthetic_spec(config), domains, sub, d.modalities)
    transform, random_transform = normalize_record, False
    if d.normalize_on_device:
      transform = functools.partial(normalize_record, frames=False)
  else:
    source = prepared.make_source(d, split)
    transform, random_transform = prepared.make_transform(d, train), train
  return Loader(source, transform, global_batch=d.batch_size if train else d.eval_batch_size,
                train=train, seed=config.seed, process_index=process_index,
                process_count=process_count, num_workers=d.num_workers,
                random_transform=random_transform, read_threads=d.read_threads,
                views=methods.train_views(config.method.name) if train else 1)
