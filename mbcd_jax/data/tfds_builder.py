r"""``tensorflow_datasets`` builders for EPIC and HAC (optional; TensorFlow is not needed).

For users who keep their data in TFDS: the same clips and record format as the prepare command,
written by TFDS as ArrayRecord and read back with ``as_data_source()``::

  import tensorflow_datasets as tfds
  from mbcd_jax.data import tfds_builder
  b = tfds_builder.MbcdHac(data_dir='/data/tfds', config='short256',
                           download_config=tfds.download.DownloadConfig(manual_dir='/data/HAC'))
  b.download_and_prepare(file_format='array_record')
  source = tfds_builder.RecordSource(b.as_data_source()['animal_train'])   # -> record dicts

Splits are '{domain}_{split}' ('D1_train', 'human_test', ...). An example holds 'record' (the
packed clip, ``store.pack``), 'label', 'domain', 'clip_id'. TFDS has no failure report: a clip
that cannot be decoded is logged and skipped. The prepare command (parallel, resumable, with a
failure list and a manifest) is the main path; this builder decodes sequentially.
"""
import logging

import numpy as np
import tensorflow_datasets as tfds

from mbcd_jax.data import epic, hac, layouts, prepare, store


class _Config(tfds.core.BuilderConfig):
  """A storage recipe (``prepare.Recipe``)."""

  def __init__(self, *, recipe: prepare.Recipe, **kw):
    super().__init__(**kw)
    self.recipe = recipe


_CONFIGS = [_Config(name='short256', description='frames at short side 256, JPEG q90',
                    recipe=prepare.Recipe())]


class _Builder(tfds.core.GeneratorBasedBuilder):
  """Shared by the two datasets; subclasses set READER."""
  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = _CONFIGS
  READER = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Point manual_dir at the dataset as downloaded from the '
                                  'SimMMDG release (root or split folder).')

  def _info(self):
    r = self.READER
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'record': tfds.features.Tensor(shape=(), dtype=np.object_),
        'label': tfds.features.ClassLabel(names=list(r.CLASSES)),
        'domain': tfds.features.ClassLabel(names=list(r.DOMAINS)),
        'clip_id': tfds.features.Text(),
    }), supervised_keys=None)

  def _split_generators(self, dl_manager):
    clips, failures = self.READER.read_clips(str(dl_manager.manual_dir), self.READER.DOMAINS)
    for f in failures:
      logging.warning('%s', f)
    groups = {}
    for c in clips:
      groups.setdefault(f'{c.domain}_{c.split}', []).append(c)
    return {name: self._generate_examples(cs) for name, cs in groups.items()}

  def _generate_examples(self, clips):
    recipe = self.builder_config.recipe
    for clip in clips:
      if clip.missing:
        logging.warning('skipping %s: %s', clip.clip_id, '; '.join(clip.missing))
        continue
      try:
        rec, _ = prepare.prepare_clip(clip, recipe)
      except prepare.MediaError as e:
        logging.warning('skipping %s', layouts.Failure(clip.clip_id, e.path, str(e)))
        continue
      yield clip.clip_id, dict(record=rec, label=clip.label, domain=clip.domain_index,
                               clip_id=clip.clip_id)


class MbcdEpic(_Builder):
  """EPIC-Kitchens D1/D2/D3 (MM-SADA splits), 8 verbs."""
  READER = epic


class MbcdHac(_Builder):
  """HAC human/animal/cartoon, 7 actions."""
  READER = hac


class RecordSource:
  """A TFDS ArrayRecord data source -> record dicts as ``pipeline.PreparedSource`` gives."""

  def __init__(self, tfds_source, modalities=('video', 'flow', 'audio')):
    self._src, self._modalities = tfds_source, tuple(modalities)

  def __len__(self):
    return len(self._src)

  def __getitem__(self, i):
    ex = self._src[int(i)]
    arrays = store.unpack(ex['record'])
    rec = {k: v for k, v in arrays.items()
           if k in ('label', 'domain') or any(k == m or k.startswith(m + '_')
                                              for m in self._modalities)}
    if 'video_shape' in arrays or 'video' in arrays:
      rec['num_frames'] = np.int32(store.num_frames(arrays, 'video'))
    return rec
