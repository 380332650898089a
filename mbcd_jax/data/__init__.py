"""Real data: EPIC-Kitchens and HAC as users download them -> pre-decoded clip stores -> grain.

- ``layouts``   : where the files of each release layout are (every candidate place, tried in
                  order; a miss lists them all).
- ``epic``, ``hac``: the split files -> one ``layouts.Clip`` per example.
- ``prepare``   : ``python -m mbcd_jax.data.prepare --dataset=epic --root=... --out=...``
                  decodes every clip once into sharded ArrayRecord files + index + manifest.
- ``store``     : the record format, shard writing and the prepared index.
- ``transforms``: the peers' clip recipe (temporal sampling, crops, flips, audio features).
- ``spectrogram``: scipy-equal log-spectrogram in numpy.
- ``pipeline``  : random-access source over a prepared store + grain pipelines per split.

Nothing here is imported by ``mbcd_jax`` itself: the embedded synthetic benchmark needs none of
the decoding dependencies (PyAV, OpenCV, pandas).
"""
