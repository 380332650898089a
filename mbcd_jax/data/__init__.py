"""Real data: EPIC-Kitchens and HAC as users download them -> pre-decoded clip stores -> grain.

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

Nothing here imports from the package above it. ``mbcd_jax.input_pipeline`` imports
``pipeline`` and ``transforms``, which need only numpy and grain at import time: the decoding
dependencies (PyAV, OpenCV, pandas) are imported where a clip is decoded, so the embedded
synthetic benchmark needs none of them.
"""
