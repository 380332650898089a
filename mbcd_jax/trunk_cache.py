"""Frozen trunks run once per example, not once per step (``config.train.trunk_cache``).

Where the data are read without random transforms (the embedded benchmark: every epoch shows
each example the same clip) and a trunk is frozen with its BatchNorm on running statistics
(``models.MultiModalModel.shares_trunk``), that trunk's output is a function of the example
alone, yet a run recomputes it in every step and every evaluation: on the embedded benchmark
caching the video and flow trunks takes 43% off the CPU train step and 81% off an evaluation
(docs/performance.md, ``benchmarks/trunk_cache.py``). ``precompute`` runs them once per example; the loaders then carry the trunk outputs in place of those modalities'
inputs and the model takes them as given (``MultiModalModel.given_trunks``). The train and
eval steps are otherwise the same programs.

Bit-identical or not used. A convolution's output for one example can depend on the other
examples of its batch: XLA's CPU kernels tile over the batch, and on an AVX2 EPYC the audio
trunk's float32 output changes in the last bit with the order of the batch (video and flow do
not). A cached output, computed once in one batch, would then differ from what the step would
have computed in another. So a modality is cached only if its trunk gives the same bits for the
same examples in every batch size and order ``position_independent`` tries; the others keep
running in the step, and a run prints which modalities were precomputed. Where all modalities
are cached or none, the run's numbers are the uncached run's numbers (tests/test_trunk_cache.py
compares whole runs bit for bit).
"""
import dataclasses
import time

from absl import logging
import jax
import numpy as np

from mbcd_jax import input_pipeline

# Above this many bytes of trunk outputs the cache is not used (host memory). The embedded
# benchmark's video and flow outputs are 88 MB for its 624 examples.
MAX_BYTES = 4 << 30


def candidates(config, model, loaders: dict) -> tuple[str, ...]:
  """The modalities whose frozen-trunk outputs are a function of the example alone (empty when
  ``config.train.trunk_cache`` is off or any split's examples are randomly transformed)."""
  if not config.train.trunk_cache:
    return ()
  if any(loader.random_transform for loader in loaders.values()):
    return ()
  if any(loader.views > 1 for loader in loaders.values()):
    return ()   # its bit checks run the loaders' batch sizes, not the views' doubled ones
  return tuple(m for m in model.modalities if model.shares_trunk(m))


def _identity(example: dict) -> dict:
  return example


class _Examples:
  """Random-access source over the stacked, already transformed examples of one split."""

  def __init__(self, arrays: dict):
    self._arrays = arrays
    self._n = len(next(iter(arrays.values())))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> dict:
    return {k: v[index] for k, v in self._arrays.items()}


def _stack(loader: input_pipeline.Loader) -> dict:
  """Every example of the loader's source, transformed (deterministically) and stacked."""
  examples = [loader.transform(dict(loader.source[i])) for i in range(len(loader.source))]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def position_independent(trunks, arrays: dict, modalities: tuple[str, ...], batch: int,
                         sizes: tuple[int, ...] = (1,)) -> tuple[str, ...]:
  """The ``modalities`` whose trunk outputs for the first examples of ``arrays`` are the same
  bits computed as the cache computes them (batches of ``batch``), in reverse order, and in
  batches of each of ``sizes`` (1, and the batches a device runs in the train and eval steps).

  Args:
    trunks: ``inputs -> modality -> [B, ...] trunk output`` (jitted).
    arrays: key -> ``[N, ...]`` transformed examples.
  """
  n = min(max(batch, *sizes), len(next(iter(arrays.values()))))
  first = {m: arrays[m][:n] for m in modalities}
  ref = _outputs(trunks, first, modalities, batch)
  rev = _outputs(trunks, {m: v[::-1] for m, v in first.items()}, modalities, batch)
  others = [{m: v[::-1] for m, v in rev.items()}]
  others += [_outputs(trunks, first, modalities, size) for size in sizes]
  return tuple(m for m in modalities
               if all(np.array_equal(ref[m], other[m]) for other in others))


def _outputs(trunks, arrays: dict, modalities: tuple[str, ...], batch: int) -> dict:
  """modality -> ``[N, ...]`` trunk outputs, computed in chunks of ``batch`` examples (the last
  one padded with the first examples, so that one program serves every chunk)."""
  n = len(next(iter(arrays.values())))
  out = {m: [] for m in modalities}
  for start in range(0, n, batch):
    idx = np.arange(start, start + batch) % n
    got = jax.device_get(trunks({m: arrays[m][idx] for m in modalities}))
    for m in modalities:
      out[m].append(got[m][:min(batch, n - start)])
  return {m: np.concatenate(v) for m, v in out.items()}


def _trunk_fn(model, frozen, modalities: tuple[str, ...]):
  """Jitted ``inputs -> modality -> trunk output`` of ``modalities`` (inference mode)."""
  only = dataclasses.replace(model, modalities=tuple(modalities))
  fn = jax.jit(lambda fz, x: only.shared_trunk_features(fz, input_pipeline.normalize_frames(x)))
  return lambda inputs: fn(frozen, inputs)


def precompute(loaders: dict, model, frozen, modalities: tuple[str, ...], batch: int,
               device_batches: tuple[int, ...] = ()) -> tuple[dict, tuple[str, ...]]:
  """The loaders reading the trunk outputs of the position-independent ``modalities``.

  Args:
    loaders: split -> ``input_pipeline.Loader`` over the raw examples.
    model: the ``MultiModalModel`` (without ``given_trunks``).
    frozen: the frozen variables (``TrainState.student.frozen``) whose trunks are run.
    modalities: ``candidates``.
    batch: the examples per trunk call (the train batch: the size the step runs).
    device_batches: the examples one device runs in the train and eval steps (checked too).
  Returns:
    (split -> Loader over examples whose cached modalities hold ``[...]`` trunk outputs,
    the cached modalities); ``(loaders, ())`` unchanged when none can be cached.
  """
  t0 = time.time()
  # This process's copy, run on its first device (the state may span every host's devices).
  frozen = jax.device_get(frozen)
  stacked = {split: _stack(loader) for split, loader in loaders.items()}

  checked = _trunk_fn(model, frozen, modalities)
  keep = position_independent(checked, stacked['train'], modalities, batch,
                              tuple(sorted({1, *device_batches})))
  if jax.process_count() > 1:   # one program on every host: the modalities all of them keep
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    mask = np.array([m in keep for m in modalities], np.int32)
    every = np.asarray(multihost_utils.process_allgather(mask)).reshape(-1, len(modalities))
    keep = tuple(m for m, ok in zip(modalities, every.all(axis=0)) if ok)
  dropped = sorted(set(modalities) - set(keep))
  if dropped:
    logging.info('trunk cache: %s kept in the step (outputs depend on the batch\'s other '
                 'examples on this machine)', ', '.join(dropped))
  if not keep:
    return loaders, ()
  # The check's program when it kept every modality (no second compile), else one without
  # the trunks that stay in the step.
  trunks_of = checked if keep == tuple(modalities) else _trunk_fn(model, frozen, keep)
  size = 0
  new = {}
  for split, arrays in stacked.items():
    outputs = _outputs(trunks_of, arrays, keep, batch)
    size += sum(v.nbytes for v in outputs.values())
    if size > MAX_BYTES:
      logging.info('trunk cache: over %d bytes, not used', MAX_BYTES)
      return loaders, ()
    new[split] = dataclasses.replace(loaders[split], source=_Examples({**arrays, **outputs}),
                                     transform=_identity, random_transform=False)
  logging.info('trunk cache: %s trunk outputs computed once (%d examples, %.1f MB, %.1f s)',
               ', '.join(keep), sum(len(l.source) for l in new.values()), size / 2**20,
               time.time() - t0)
  return new, keep
