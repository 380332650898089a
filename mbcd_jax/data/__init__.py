"""The data sources: the embedded synthetic benchmark, and EPIC-Kitchens and HAC as users
download them -> pre-decoded clip stores -> grain.

- ``synthetic`` : the embedded benchmark's generator (seeded clips in the record format the real
                  data uses; docs/benchmark.md).

- ``layouts``   : where the files of each release layout are (every candidate place, tried in
                  order; a miss lists them all).
- ``epic``, ``hac``: the split files -> one ``layouts.Clip`` per example.
- ``prepare``   : ``python -m mbcd_jax.data.prepare --dataset=epic --root=... --out=...``
                  decodes every clip once into sharded ArrayRecord files + index + manifest.
- ``store``     : the record format, shard writing and the prepared index.
- ``transforms``: the peers' clip recipe (temporal sampling, crops, flips, audio features).
- ``spectrogram``: scipy-equal log-spectrogram in numpy.
- ``pipeline``  : a prepared store as a protocol split: random-access source + clip transform
                  (``mbcd_jax.input_pipeline.Loader`` batches it, as it does synthetic data).

Nothing here imports from the package above it except the modality names
(``mbcd_jax.MODALITIES``, a constant of the import-free package root) and
``mbcd_jax.errors.ConfigError``. The other way round,
``mbcd_jax.config_lib`` takes each dataset's domains and class count from ``epic`` / ``hac``
(their one definition), and ``mbcd_jax.input_pipeline`` imports
``pipeline`` and ``transforms``, which need only numpy and grain at import time: the decoding
dependencies (PyAV, OpenCV, pandas) are imported where a clip is decoded, so the embedded
synthetic benchmark needs none of them.
"""
