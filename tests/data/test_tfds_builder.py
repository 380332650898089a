"""The optional TFDS builder: builds without TensorFlow, same records as the prepare command."""
import sys

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from mbcd_jax.data import pipeline, prepare, store, transforms  # noqa: E402
from tests.data import fixtures  # noqa: E402


def test_hac_builder_matches_prepare(tmp_path):
  from mbcd_jax.data import tfds_builder
  src = str(tmp_path / 'src')
  fixtures.make_hac(src, counts={'train': 1, 'test': 1}, num_frames=12)
  b = tfds_builder.MbcdHac(data_dir=str(tmp_path / 'tfds'), config='short256',
                           file_format='array_record')
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=src))
  assert 'tensorflow' not in sys.modules
  sources = b.as_data_source()
  assert sorted(sources) == sorted(f'{d}_{s}' for d in fixtures.HAC_DOMAINS
                                   for s in ('train', 'test'))
  index = prepare.run('hac', src, str(tmp_path / 'prepared'), workers=1, progress=False)
  ours = pipeline.PreparedSource(str(tmp_path / 'prepared'), index['entries'])
  by_id = {e['clip_id']: i for i, e in enumerate(index['entries'])}
  ex = sources['animal_train'][0]
  theirs = store.unpack(ex['record'])
  mine = ours[by_id[ex['clip_id'].decode()]]
  for k in ('video_jpeg', 'video_offsets', 'flow_jpeg', 'audio', 'label', 'domain'):
    np.testing.assert_array_equal(theirs[k], mine[k])
  rec = tfds_builder.RecordSource(sources['animal_train'])[0]
  out = transforms.ClipTransform('hac', ('video', 'flow', 'audio'), transforms.ClipConfig(
      video_frames=4, flow_frames=2, crop_size=224, audio_samples=4000))(rec)
  assert out['video'].shape == (4, 224, 224, 3) and int(out['domain']) == 1
