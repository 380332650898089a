"""grain pipelines over a prepared clip store, per protocol split.

Splits (method.md §6): 'train' = the source domains' train splits; 'val' = the source domains'
test splits (in-domain model selection); 'test' = the target domain: EPIC its test split, HAC
the whole domain (train + test, as SimMMDG and the port) unless ``data.hac_test_split_only``.

Config fields read (``config.data``):
  dir              the prepared store (``python -m mbcd_jax.data.prepare``)
  dataset          'epic' | 'hac'
  sources          source domain names (tuple, or a comma separated string)
  target           target domain name
  modalities       subset of ('video', 'flow', 'audio')
  hac_test_split_only  bool (HAC target: its test split only)
  batch_size       global train batch (all processes); eval_batch_size likewise for eval
  num_workers      grain worker processes (0 = in-process)
  clip             optional dict, fields of ``transforms.ClipConfig`` (paper recipe by default)
  read_threads     optional, threads per process running the per-example transform (default 2)

Every example's randomness is a function of (seed, epoch, position in the global batch
sequence) only, so the same seed gives the same batches whatever the number of processes or
workers, and process p of P gets rows ``[p*b, (p+1)*b)`` of every global batch (b = B / P).
"""
import os
from typing import Any

import grain
import numpy as np

from mbcd_jax.data import store, transforms

MODALITIES = ('video', 'flow', 'audio')
_COUNT_KEY = {'video': 'num_frames', 'flow': 'num_flow_frames', 'audio': 'num_audio_samples'}


def _tuple(x) -> tuple:
  return tuple(s for s in x.split(',') if s) if isinstance(x, str) else tuple(x)


# --------------------------------------------------------------------------------------------
# Random-access source.
# --------------------------------------------------------------------------------------------
class PreparedSource(grain.sources.RandomAccessDataSource):
  """Clip records of some index entries of a store: ``source[i]`` -> dict of numpy arrays.

  A record holds the requested modalities as stored (``store.py``), 'label' and 'domain' int32,
  and 'num_frames' int32 (RGB frames of the clip, if prepared). Shard readers open lazily in
  each process, so the source pickles into grain worker processes.
  """

  def __init__(self, data_dir: str, entries: list[dict], modalities=MODALITIES):
    self._dir = data_dir
    self._modalities = tuple(modalities)
    shards = sorted({e['shard'] for e in entries})
    ids = {s: k for k, s in enumerate(shards)}
    self._paths = [os.path.join(data_dir, store.SHARDS, s) for s in shards]
    self._refs = np.array([(ids[e['shard']], e['pos']) for e in entries], np.int64).reshape(-1, 2)
    self._num_frames = np.array([e.get('num_frames', 0) for e in entries], np.int32)
    self._readers = {}

  def __len__(self) -> int:
    return len(self._refs)

  def __repr__(self) -> str:
    return f'PreparedSource({self._dir!r}, {len(self)} clips, {self._modalities})'

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_readers'] = {}
    return state

  def _reader(self, k: int):
    r = self._readers.get(k)
    if r is None:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      r = array_record_module.ArrayRecordReader(
          self._paths[k], 'readahead_buffer_size:0,max_parallelism:0')
      self._readers[k] = r
    return r

  def read_bytes(self, i: int) -> bytes:
    k, pos = self._refs[i]
    return self._reader(int(k)).read([int(pos)])[0]

  def __getitem__(self, i) -> dict:
    arrays = store.unpack(self.read_bytes(int(i)))
    keep = ('label', 'domain') + tuple(
        k for k in arrays for m in self._modalities if k == m or k.startswith(m + '_'))
    rec = {k: arrays[k] for k in keep}
    rec['num_frames'] = self._num_frames[int(i)]
    return rec


def select(index: dict, split: str, sources, target: str, test_split_only: bool = False):
  """Index entries of a protocol split ('train' | 'val' | 'test')."""
  sources = _tuple(sources)
  if split == 'train':
    keep = lambda e: e['domain'] in sources and e['split'] == 'train'
  elif split == 'val':
    keep = lambda e: e['domain'] in sources and e['split'] == 'test'
  elif split == 'test':
    whole = index['dataset'] == 'hac' and not test_split_only
    keep = lambda e: e['domain'] == target and (whole or e['split'] == 'test')
  else:
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
  return [e for e in index['entries'] if keep(e)]


def make_source(config_data, split: str) -> PreparedSource:
  """The PreparedSource of a protocol split; ValueError (one line) for a missing store, split or
  modality."""
  d = config_data
  index = store.load_index(d.get('dir'), d.dataset)
  mods = _tuple(d.modalities)
  entries = select(index, split, d.sources, d.target, bool(d.get('hac_test_split_only', False)))
  if not entries:
    raise ValueError(f'{d.dir}: no prepared clips for the {split!r} split (sources '
                     f'{_tuple(d.sources)}, target {d.target!r}); the store has domains '
                     f'{sorted({e["domain"] for e in index["entries"]})} and '
                     f'{len(index["failures"])} recorded failure(s), see its manifest.json')
  for m in mods:
    if m not in MODALITIES:
      raise ValueError(f'config.data.modalities: unknown modality {m!r}')
    if _COUNT_KEY[m] not in entries[0]:
      raise ValueError(f'{d.dir} was prepared without {m!r}; re-run the prepare command with '
                       f'--modalities including {m}')
  return PreparedSource(d.dir, entries, mods)


def make_transform(config_data, train: bool) -> transforms.ClipTransform:
  d = config_data
  return transforms.ClipTransform(d.dataset, _tuple(d.modalities),
                                  transforms.ClipConfig.from_config(d.get('clip')), train)


# --------------------------------------------------------------------------------------------
# Orders: local element i -> (source index, rng, validity).
# --------------------------------------------------------------------------------------------
class _Examples:
  """``fn(i, _)`` for ``map_with_index``: this process's i-th example of the split stream.

  Local element i is row ``r`` of local batch ``k`` in epoch ``e``; its global position in the
  epoch is ``k * B + p * b + r``. Train reads ``perm_e[pos]`` (a fresh permutation per epoch,
  last partial global batch dropped); eval reads ``pos`` in order and pads past the end with
  clip 0, flagged by mask 0.
  """

  def __init__(self, source, transform, n: int, global_batch: int, local_batch: int,
               process_index: int, seed: int, train: bool):
    self.source, self.transform, self.n = source, transform, n
    self.gb, self.lb, self.p, self.seed, self.train = (global_batch, local_batch, process_index,
                                                       seed, train)
    self.steps = n // global_batch if train else -(-n // global_batch)
    self.per_epoch = self.steps * local_batch
    self._perm = (None, None)

  def _permutation(self, epoch: int) -> np.ndarray:
    e, perm = self._perm
    if e != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      self._perm = (epoch, perm)
    return perm

  def __call__(self, i: int, _: Any = None) -> dict:
    epoch, j = divmod(int(i), self.per_epoch)
    k, r = divmod(j, self.lb)
    pos = k * self.gb + self.p * self.lb + r
    if self.train:
      rng = np.random.default_rng([self.seed, epoch, pos, 1])
      return self.transform(self.source[int(self._permutation(epoch)[pos])], rng)
    rec = dict(self.source[pos if pos < self.n else 0])
    rec['mask'] = np.float32(pos < self.n)
    return self.transform(rec)


def _absl_flags_parsed():
  """grain's worker processes read absl flags; outside an absl app (notebooks, tests) nothing
  has parsed them, and grain would fail with UnparsedFlagAccessError. Mark them parsed (their
  defaults), as absl.app would."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_split(config_data, split: str, *, seed: int, train: bool, process_index: int = 0,
               process_count: int = 1, num_epochs: int | None = 1):
  """This process's batches of a protocol split as a grain IterDataset.

  Args:
    config_data: ``config.data`` (fields in the module docstring).
    split: 'train' | 'val' | 'test'.
    seed: shuffling and augmentation seed.
    train: random transforms, a new order per epoch, drop the last partial batch; else the
      deterministic transforms, fixed order, last batch padded with a float32 'mask' [b].
    num_epochs: train epochs in the stream (None = endless); eval is always one pass.
  Returns:
    (dataset, num_examples): ``iter(dataset)`` yields dicts of ``[b, ...]`` arrays (b = batch /
    process_count) and has ``get_state()`` / ``set_state()`` to resume mid-epoch;
    num_examples is the split's size (all processes).
  """
  d = config_data
  gb = int(d.batch_size if train else d.get('eval_batch_size', d.batch_size))
  if gb % process_count:
    raise ValueError(f'batch size {gb} is not divisible by the number of processes '
                     f'{process_count}')
  source = make_source(d, split)
  n = len(source)
  if train and n < gb:
    raise ValueError(f'the {split!r} split has {n} clips, fewer than one batch of {gb}')
  ex = _Examples(source, make_transform(d, train), n, gb, gb // process_count, process_index,
                 seed, train)
  ds = grain.MapDataset.range(ex.per_epoch)
  if train:
    # repeat() keeps the global element index, so _Examples sees the epoch number.
    ds = ds.repeat(num_epochs)
  ds = ds.map_with_index(ex).batch(ex.lb, drop_remainder=train)
  threads = int(d.get('read_threads', 2) or 2)
  # grain's default read-ahead (500 elements) would hold hundreds of paper-sized batches.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  workers = int(d.get('num_workers', 0) or 0)
  if workers > 0:
    _absl_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=1))
  return it, n


def make_loader(config, split: str, *, global_batch: int, train: bool, seed: int = 0,
                process_index: int = 0, process_count: int = 1, num_workers: int = 0):
  """``mbcd_jax.input_pipeline.Loader`` over the prepared store (the train loop's interface)."""
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  d = config.data
  source = make_source(d, split)

  class _Loader(input_pipeline.Loader):
    """The Loader with a read-ahead bounded to a few batches (real batches are ~300 MB)."""

    def epoch(self, epoch: int = 0, start_batch: int = 0):
      threads = int(d.get('read_threads', 2) or 2)
      ds = self.dataset(epoch)[start_batch:].to_iter_dataset(
          grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
      if self.num_workers > 0:
        _absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                         per_worker_buffer_size=1))
      return iter(ds)

  return _Loader(source, make_transform(d, train), global_batch=global_batch, train=train,
                 seed=seed, process_index=process_index, process_count=process_count,
                 num_workers=num_workers, random_transform=train)
