"""Input pipelines: a random-access source per split -> grain -> per-process batches.

Splits follow the protocol (method.md §6): 'train' = the source domains' train splits,
'val' = the source domains' test splits (in-domain model selection), 'test' = the unseen target
domain (HAC: the whole domain, as SimMMDG and the port; EPIC: its test split).

Batches are dicts of numpy arrays: modality -> float32 ``[b, ...]`` (model-ready), 'label' and
'domain' int32 ``[b]``, and for eval 'mask' float32 ``[b]`` (0 for padding). ``b`` is this
process's share of the global batch: process p gets rows ``[p*b, (p+1)*b)`` of every global
batch, so a multi-host run sees exactly the global batches of a single-host run.
"""
import dataclasses
from typing import Any, Callable, Iterator

import grain
import numpy as np

from mbcd_jax import synthetic
from mbcd_jax.data import transforms



def normalize_record(rec: dict) -> dict:
  """Decoded record -> model-ready example (the deterministic part of the real test transform):
  RGB (x - mean) / std, flow (x - 128) / 128, audio per-sample z-score with a channel axis."""
  out = {}
  for k, v in rec.items():
    if k == 'video':
      out[k] = transforms.normalize_rgb(v)
    elif k == 'flow':
      out[k] = transforms.normalize_flow(v)
    elif k == 'audio':
      a = v.astype(np.float32)
      out[k] = ((a - a.mean()) / (a.std() + 1e-8))[..., None]
    else:
      out[k] = v
  return out


class _Take:
  """Random-access view ``source[indices[i]]`` with a per-item validity flag (eval padding)."""

  def __init__(self, source, indices: np.ndarray, valid: np.ndarray | None):
    self._source, self._indices, self._valid = source, indices, valid

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    rec = dict(self._source[int(self._indices[i])])
    if self._valid is not None:
      rec['mask'] = np.float32(self._valid[i])
    return rec


@dataclasses.dataclass
class Loader:
  """Epoch iterator over one split for this process.

  Attributes:
    source: random-access source of decoded records.
    transform: record -> model-ready example (``fn(record, rng)`` if ``random_transform``).
    global_batch: batch size summed over all processes.
    train: shuffle every epoch and drop the last partial batch; else fixed order, padded.
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

  def __post_init__(self):
    if self.global_batch % self.process_count:
      raise ValueError(f'batch size {self.global_batch} is not divisible by the number of '
                       f'processes {self.process_count}')
    if self.train and len(self.source) < self.global_batch:
      raise ValueError(f'the training split has {len(self.source)} examples, fewer than one '
                       f'batch of {self.global_batch}')

  @property
  def num_examples(self) -> int:
    return len(self.source)

  @property
  def num_batches(self) -> int:
    n, b = len(self.source), self.global_batch
    return n // b if self.train else -(-n // b)

  def _local_indices(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    n, b = len(self.source), self.global_batch
    if self.train:
      order = np.random.default_rng([self.seed, epoch]).permutation(n)[:self.num_batches * b]
      valid = None
    else:
      pad = self.num_batches * b - n
      order = np.concatenate([np.arange(n), np.zeros(pad, np.int64)])
      valid = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    lb = b // self.process_count
    sl = slice(self.process_index * lb, (self.process_index + 1) * lb)
    order = order.reshape(-1, b)[:, sl].reshape(-1)
    if valid is not None:
      valid = valid.reshape(-1, b)[:, sl].reshape(-1)
    return order, valid

  def dataset(self, epoch: int = 0) -> grain.MapDataset:
    """The epoch's batches as a random-access grain dataset (``ds[k:]`` resumes mid-epoch)."""
    order, valid = self._local_indices(epoch)
    ds = grain.MapDataset.source(_Take(self.source, order, valid))
    if self.random_transform:
      ds = ds.seed(int(np.random.SeedSequence([self.seed, epoch, 1]).generate_state(1)[0]))
      ds = ds.random_map(self.transform)
    else:
      ds = ds.map(self.transform)
    return ds.batch(self.global_batch // self.process_count, drop_remainder=self.train)

  def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[dict]:
    """Iterates over the epoch's batches, starting at batch ``start_batch``."""
    ds = self.dataset(epoch)[start_batch:].to_iter_dataset()
    if self.num_workers > 0:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    return iter(ds)


def synthetic_spec(config) -> synthetic.SyntheticSpec:
  """``config.data`` (+ ``config.data.synthetic`` knobs) -> SyntheticSpec."""
  knobs = config.data.get('synthetic')
  knobs = knobs.to_dict() if knobs is not None else {}
  for k in ('video_shape', 'flow_shape', 'audio_shape'):
    if k in knobs:
      knobs[k] = tuple(knobs[k])
  return synthetic.SyntheticSpec(num_classes=config.data.num_classes,
                                 domains=tuple(config.data.domains), **knobs)


def make_loader(config, split: str, *, process_index: int = 0, process_count: int = 1) -> Loader:
  """The Loader of ``split`` in {'train', 'val', 'test'} for ``config``."""
  if split not in ('train', 'val', 'test'):
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
  d = config.data
  train = split == 'train'
  common = dict(global_batch=d.batch_size if train else d.eval_batch_size, train=train,
                seed=config.seed, process_index=process_index, process_count=process_count,
                num_workers=d.num_workers)
  if d.source == 'synthetic':
    spec = synthetic_spec(config)
    if split == 'test':
      domains, sub = (d.target,), 'test' if d.hac_test_split_only else 'all'
    else:
      domains, sub = tuple(d.sources), 'train' if train else 'test'
    src = synthetic.SyntheticSource(spec, domains, sub, d.modalities)
    return Loader(src, normalize_record, **common)
  # Real data: prepared clip stores (issue "Real data"); imported lazily so the embedded
  # benchmark needs none of its dependencies.
  from mbcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_loader(config, split, **common)
