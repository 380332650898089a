"""A prepared clip store as a protocol split: the random-access source and its transform.

``mbcd_jax.input_pipeline.Loader`` orders, slices and batches them, as for synthetic data.

Splits: 'train' = the source domains' train splits; 'val' = the source domains' test splits
(in-domain model selection); 'test' = the target domain: EPIC its test split, HAC the whole
domain (train + test, as SimMMDG and the port) unless ``data.hac_test_split_only``.

Config fields read (``config.data``):
  dir              the prepared store (``python -m mbcd_jax.data.prepare``)
  dataset          'epic' | 'hac'
  sources          source domain names (tuple, or a comma separated string)
  target           target domain name
  modalities       subset of ('video', 'flow', 'audio')
  hac_test_split_only  bool (HAC target: its test split only)
  clip             fields of ``transforms.ClipConfig`` (the paper recipe by default)
  normalize_on_device  bool (video / flow stay uint8; the jitted steps normalise them)
"""
import os

import grain
import numpy as np

from mbcd_jax import MODALITIES
from mbcd_jax.data import epic, hac, store, transforms
from mbcd_jax.errors import ConfigError

_TARGET_TEST_SPLIT_ONLY = {'hac': hac.TARGET_TEST_SPLIT_ONLY, 'epic': epic.TARGET_TEST_SPLIT_ONLY}
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


def select(index: dict, split: str, sources, target: str, hac_test_split_only: bool = False):
  """Index entries of a protocol split ('train' | 'val' | 'test'); the target's test set per
  the dataset module's ``TARGET_TEST_SPLIT_ONLY`` (``config_lib.DATASETS`` reads the same)."""
  sources = _tuple(sources)
  if split == 'train':
    keep = lambda e: e['domain'] in sources and e['split'] == 'train'
  elif split == 'val':
    keep = lambda e: e['domain'] in sources and e['split'] == 'test'
  elif split == 'test':
    whole = not (_TARGET_TEST_SPLIT_ONLY[index['dataset']] or hac_test_split_only)
    keep = lambda e: e['domain'] == target and (whole or e['split'] == 'test')
  else:
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
  return [e for e in index['entries'] if keep(e)]


def make_source(config_data, split: str) -> PreparedSource:
  """The PreparedSource of a protocol split; ValueError (one line) for a missing store, split or
  modality."""
  d = config_data
  index = store.load_index(d.dir, d.dataset)
  mods = _tuple(d.modalities)
  entries = select(index, split, d.sources, d.target, bool(d.hac_test_split_only))
  if not entries:
    raise ConfigError(f'{d.dir}: no prepared clips for the {split!r} split (sources '
                     f'{_tuple(d.sources)}, target {d.target!r}); the store has domains '
                     f'{sorted({e["domain"] for e in index["entries"]})} and '
                     f'{len(index["failures"])} recorded failure(s), see its manifest.json')
  for m in mods:
    if m not in MODALITIES:
      raise ConfigError(f'config.data.modalities: unknown modality {m!r}')
    if _COUNT_KEY[m] not in entries[0]:
      raise ConfigError(f'{d.dir} was prepared without {m!r}; re-run the prepare command with '
                       f'--modalities including {m}')
  return PreparedSource(d.dir, entries, mods)


def make_transform(config_data, train: bool) -> transforms.ClipTransform:
  """The split's per-example transform: random crops, flips and audio masking if ``train``
  (called as ``fn(record, rng)``), else the deterministic test transform; video / flow left
  uint8 if ``normalize_on_device``."""
  d = config_data
  return transforms.ClipTransform(d.dataset, _tuple(d.modalities),
                                  transforms.ClipConfig.from_config(d.clip), train,
                                  normalize=not d.normalize_on_device)
