"""Converts the paper's PyTorch encoder checkpoints to Flax variables, and loads the result.

    python -m mbcd_jax.encoders.convert --kind=slowfast_r101 \\
        --torch_checkpoint=slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth \\
        --out=pretrained/slowfast_r101.msgpack

Kinds (each is also the name of the registered encoder it fills):

* ``slowfast_r101``: mmaction2 checkpoint (``{'state_dict': {'backbone.slow_path...'}}``).
* ``slowonly_r50_flow``: mmaction2 checkpoint (``{'state_dict': {'backbone.conv1...'}}``).
* ``vggsound_r18``: VGGSound ``vggsound_avgpool.pth.tar`` (``{'model_state_dict':
  {'audnet.conv1.weight', ...}}``, possibly with a DataParallel ``module.`` prefix).

The mapping is mechanical because the Flax modules carry the PyTorch names: strip the wrapper
prefixes (``module.``, ``backbone.``, ``audnet.``), split the key on '.', and map the leaf:
conv ``weight`` [O, I, *k] -> ``params/.../kernel`` [*k, I, O]; BN ``weight``/``bias`` ->
``params/.../scale``/``bias``; ``running_mean``/``running_var`` -> ``batch_stats/.../mean``/
``var``. ``layer4.*`` goes to the trainable stage, everything else to the frozen trunk. Heads
(``cls_head.*``, ``fc.*``) and ``num_batches_tracked`` are dropped. Any backbone key without a
Flax counterpart, any Flax variable left unfilled, and any shape mismatch is an error that
lists the offending names.

The output file is ``flax.serialization.msgpack_serialize({'format', 'kind', 'encoder_kwargs',
'settings', 'trunk', 'stage'})``: ``encoder_kwargs`` as given on the command line, ``settings``
every architecture setting of the encoder it was converted for (defaults filled in; JSON).
:func:`load_pretrained` reads it back and refuses it for an encoder built with other settings:
weights alone cannot tell a SlowFast 8x8 from a 4x16 apart in ``resample_rate`` /
``speed_ratio``, which change what the network computes but no variable's shape. (A ``.pth``
is converted on the fly when torch is installed.) torch is imported only inside the functions
that read ``.pth`` files.
"""
import argparse
import hashlib
import inspect
import json
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mbcd_jax import encoders as encoders_lib
from mbcd_jax.errors import ConfigError

PyTree = Any
FORMAT = 'mbcd_jax.encoders.pretrained/1'

# Per kind: the dummy input used to trace variable shapes (shapes of the variables do not
# depend on T/H/W), the key prefixes to strip, the non-backbone key prefixes to drop, and the
# modality the paper configs use the encoder for (named in the command-line fix of a refusal).
KINDS = {
    'slowfast_r101': dict(input_shape=(1, 8, 32, 32, 3), strip=('module.', 'backbone.'),
                          drop=('cls_head.', 'data_preprocessor.'), modality='video'),
    'slowonly_r50_flow': dict(input_shape=(1, 2, 32, 32, 2), strip=('module.', 'backbone.'),
                              drop=('cls_head.', 'data_preprocessor.'), modality='flow'),
    'vggsound_r18': dict(input_shape=(1, 64, 64, 1), strip=('module.', 'audnet.'),
                         drop=('fc.', 'fc_.', 'avgpool.'), modality='audio'),
    # The embedded benchmark's small encoders (mbcd_jax/encoders/small.py), pretrained upstream
    # by mbcd_jax/synthetic/pretrain.py, never converted from PyTorch. frame_cnn serves video (3 channels)
    # and flow (2), so its input shape, which fixes the first kernel, is per modality.
    'frame_cnn': dict(input_shape={'video': (1, 2, 16, 16, 3), 'flow': (1, 2, 16, 16, 2)},
                      strip=(), drop=(), modality='video'),
    'spec_cnn': dict(input_shape=(1, 16, 16, 1), strip=(), drop=(), modality='audio'),
}


class ConversionError(ConfigError):
  """A checkpoint does not match the Flax model; the message lists every mismatch."""


def _check_kind(kind: str):
  if kind not in KINDS:
    raise ConfigError(f'unknown kind {kind!r}; known: {", ".join(KINDS)}')


def settings(kind: str, **encoder_kwargs) -> dict[str, Any]:
  """Every architecture setting of encoder ``kind`` built with ``encoder_kwargs``.

  The factory's defaults filled in, compute-only settings (``paper.COMPUTE_ONLY``: ``dtype``,
  ``remat``) left out, values made JSON-plain (tuples -> lists), e.g. ``settings(
  'vggsound_r18') == {'width': 64}``.

  Raises:
    ValueError: a kwarg the factory does not take (named).
  """
  _check_kind(kind)
  from mbcd_jax.encoders import paper, small  # pylint: disable=g-import-not-at-top  (imports this module)
  params = inspect.signature(getattr(paper, kind, None) or getattr(small, kind)).parameters
  unknown = sorted(set(encoder_kwargs) - set(params))
  if unknown:
    raise ConfigError(f'encoder {kind!r} has no setting {", ".join(unknown)}; '
                     f'its settings: {", ".join(params)}')
  out = {k: encoder_kwargs.get(k, p.default) for k, p in params.items()
         if k not in paper.COMPUTE_ONLY}
  return json.loads(json.dumps(out))


def _check_settings(path: str, kind: str, recorded: Mapping[str, Any], wanted: Mapping[str, Any],
                    modality: str):
  """Refuses a file converted with settings other than the encoder's (one line, with the fix)."""
  diff = sorted(k for k in recorded if k in wanted and recorded[k] != wanted[k])
  if not diff:
    return
  what = '; '.join(f'{k}: file {recorded[k]!r}, encoder {wanted[k]!r}' for k in diff)
  fix = ' '.join(f'--config.model.encoders.{modality}.{k}={json.dumps(recorded[k])}'
                 for k in diff)
  raise ConversionError(f'{path} was converted for {kind!r} with other settings than the '
                        f'encoder is built with ({what}); build the encoder as the file was '
                        f'converted: {fix}')


def variable_shapes(kind: str, modality: str | None = None, **encoder_kwargs) -> tuple[dict, dict]:
  """Flat ``{(collection, *path): shape}`` of the trunk's and the stage's variables
  (``modality`` picks the input shape of a kind that serves several, e.g. ``frame_cnn``)."""
  _check_kind(kind)
  enc = encoders_lib.build(kind, encoder_kwargs)
  shape = KINDS[kind]['input_shape']
  if isinstance(shape, dict):
    shape = shape[modality or KINDS[kind]['modality']]
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  key = jax.random.key(0)
  trunk = jax.eval_shape(enc.trunk.init, key, x)
  fmap = jax.eval_shape(enc.trunk.apply, trunk, x)
  stage = jax.eval_shape(enc.stage.init, key, fmap)
  flat = lambda t: {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(t)).items()}
  return flat(trunk), flat(stage)


def _flax_key(torch_key: str, ndim: int) -> tuple[tuple, bool]:
  """('a.b.weight', ndim) -> ((collection, 'a', 'b', leaf), is_conv_kernel)."""
  *path, leaf = torch_key.split('.')
  if leaf == 'weight':
    return (('params', *path, 'kernel'), True) if ndim > 1 else (('params', *path, 'scale'), False)
  if leaf == 'bias':
    return ('params', *path, 'bias'), False
  if leaf == 'running_mean':
    return ('batch_stats', *path, 'mean'), False
  if leaf == 'running_var':
    return ('batch_stats', *path, 'var'), False
  return ('?', *path, leaf), False


def _strip(key: str, prefixes) -> str:
  changed = True
  while changed:
    changed = False
    for p in prefixes:
      if key.startswith(p):
        key, changed = key[len(p):], True
  return key


def _fmt(names, limit=25) -> str:
  names = sorted(names)
  more = f'\n    ... and {len(names) - limit} more' if len(names) > limit else ''
  return ''.join(f'\n    {n}' for n in names[:limit]) + more


def convert_state_dict(kind: str, state_dict: Mapping[str, Any],
                       **encoder_kwargs) -> tuple[PyTree, PyTree]:
  """PyTorch ``state_dict`` (name -> array-like) -> ``(trunk_vars, stage_vars)`` numpy pytrees.

  Args:
    kind: one of :data:`KINDS`.
    state_dict: the backbone weights; wrapper prefixes and head keys are tolerated.
    **encoder_kwargs: the encoder's architecture kwargs (e.g. ``depth=50`` for a reduced test
      model); ``dtype``/``remat`` do not change the variables.

  Raises:
    ConversionError: listing unexpected keys, unfilled Flax variables and shape mismatches.
  """
  spec = KINDS[kind] if kind in KINDS else _check_kind(kind)
  trunk_shapes, stage_shapes = variable_shapes(kind, **encoder_kwargs)
  out = {'trunk': {}, 'stage': {}}
  unexpected, misshaped, dropped, seen, hints = [], [], [], set(), set()
  for raw_key, value in state_dict.items():
    key = _strip(raw_key, spec['strip'])
    if key.endswith('num_batches_tracked') or key.startswith(spec['drop']):
      dropped.append(raw_key)
      continue
    arr = np.asarray(value, dtype=np.float32)
    fkey, is_kernel = _flax_key(key, arr.ndim)
    if is_kernel:  # [O, I, *k] -> [*k, I, O]
      arr = np.transpose(arr, tuple(range(2, arr.ndim)) + (1, 0))
    part = 'trunk' if fkey in trunk_shapes else 'stage' if fkey in stage_shapes else None
    if part is None:
      unexpected.append(f'{raw_key} (as {"/".join(fkey)})')
      continue
    want = (trunk_shapes if part == 'trunk' else stage_shapes)[fkey]
    seen.add(fkey)
    if tuple(arr.shape) != want:
      misshaped.append(f'{raw_key}: checkpoint {tuple(np.shape(value))} -> Flax {arr.shape}, '
                       f'model wants {want} at {"/".join(fkey)}')
      if 'lateral' in key and arr.ndim == 5:  # the (k, 1, 1) fast->slow convs
        hints.add(f'the checkpoint\'s lateral convs have fusion_kernel={arr.shape[0]}'
                  + (' (mmaction2\'s 8x8x1 config: resample_rate=4, speed_ratio=4, '
                     'fusion_kernel=7)' if arr.shape[0] == 7 else ''))
      continue
    out[part][fkey] = arr
  missing = [f'{part}:{"/".join(k)}' for part, shapes in (('trunk', trunk_shapes),
                                                          ('stage', stage_shapes))
             for k in shapes if k not in seen]
  if unexpected or misshaped or missing:
    raise ConversionError(
        f'checkpoint does not match encoder {kind!r} {encoder_kwargs or ""}:'
        f'\n  {len(missing)} missing Flax variables:{_fmt(missing)}'
        f'\n  {len(unexpected)} unexpected checkpoint keys:{_fmt(unexpected)}'
        f'\n  {len(misshaped)} mis-shaped:{_fmt(misshaped)}'
        f'\n  ({len(dropped)} head / counter keys were ignored)'
        + ''.join(f'\n  hint: {h}' for h in sorted(hints)))
  unflat = flax.traverse_util.unflatten_dict
  return unflat(out['trunk']), unflat(out['stage'])


def read_torch_checkpoint(path: str, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  """Reads a ``.pth`` (raw state_dict, mmaction ``{'state_dict'}`` or VGGSound
  ``{'model_state_dict'}``) into ``{name: float32 numpy}``. Needs torch."""
  import torch  # pylint: disable=g-import-not-at-top
  try:
    ckpt = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
  except Exception as e:  # pylint: disable=broad-except
    if trust_pickle:
      raise
    raise RuntimeError(
        f'torch.load(weights_only=True) could not read {path} ({type(e).__name__}: {e}). '
        'mmaction2 checkpoints carry pickled metadata; if you trust the file, pass '
        '--trust_pickle (load_pretrained(..., trust_pickle=True)).') from e
  for k in ('state_dict', 'model_state_dict', 'model'):
    if isinstance(ckpt, dict) and k in ckpt and isinstance(ckpt[k], dict):
      ckpt = ckpt[k]
      break
  return {k: v.detach().cpu().float().numpy() for k, v in ckpt.items()
          if hasattr(v, 'detach')}


def save(path: str, kind: str, trunk_vars: PyTree, stage_vars: PyTree,
         encoder_kwargs: Mapping[str, Any] | None = None) -> None:
  """Writes converted variables and the settings (see :func:`settings`) they were made for."""
  encoder_kwargs = dict(encoder_kwargs or {})
  blob = {'format': FORMAT, 'kind': kind, 'encoder_kwargs': json.dumps(encoder_kwargs),
          'settings': json.dumps(settings(kind, **encoder_kwargs)),
          'trunk': jax.tree.map(np.asarray, trunk_vars),
          'stage': jax.tree.map(np.asarray, stage_vars)}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(blob))


def weights_digest(path: str) -> str:
  """A short content digest of a pretrained file's weights (16 hex digits).

  For this module's msgpack files: SHA-256 over the trunk and stage arrays (names, dtypes,
  shapes, bytes), so two files holding the same weights match even where their metadata differ
  (the synthetic upstream files record their training's wall time). For a PyTorch checkpoint:
  SHA-256 of the file, whose conversion is a function of it. Runs record it
  (``summary.json['pretrained']``): a run's numbers hold for the weights it loaded, and the same
  path can hold other weights on another machine or after the code that makes them changed.
  """
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    if path.endswith(('.pth', '.pt', '.tar')):
      for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
      return h.hexdigest()[:16]
    blob = flax.serialization.msgpack_restore(f.read())
  for part in ('trunk', 'stage'):
    flat = flax.traverse_util.flatten_dict(blob.get(part) or {})
    for k in sorted(flat):
      a = np.ascontiguousarray(flat[k])
      h.update(f'{part}/{"/".join(k)}:{a.dtype.str}:{a.shape};'.encode())
      h.update(a.tobytes())
  return h.hexdigest()[:16]


def load_pretrained(kind: str, path: str, trust_pickle: bool = False, modality: str | None = None,
                    **encoder_kwargs) -> tuple[PyTree, PyTree]:
  """Loads pretrained ``(trunk_vars, stage_vars)`` for encoder ``kind``.

  Args:
    kind: registered encoder name (``slowfast_r101``, ``slowonly_r50_flow``, ``vggsound_r18``).
    path: a file written by this module's CLI (msgpack), or a PyTorch checkpoint (``.pth``,
      ``.pt``, ``.tar``: converted on the fly, needs torch).
    trust_pickle: allow full unpickling of a ``.pth`` (mmaction2 checkpoints need it).
    modality: config key named in the fix of a refused file (default: the kind's usual one,
      ``video`` / ``flow`` / ``audio``).
    **encoder_kwargs: the architecture kwargs the encoder is built with (same as the config's
      encoder kwargs; ``dtype``/``remat`` are ignored for the check).

  Returns:
    ``(trunk_vars, stage_vars)``, each ``{'params': ..., 'batch_stats': ...}`` of float32
    ``jax.Array``, ready for ``enc.trunk.apply`` / ``enc.stage.apply``.

  Raises:
    ConversionError: if the file was made for another kind, was converted with other
      settings than ``encoder_kwargs`` give (one line naming each setting, both values and
      the ``--config.model.encoders.<modality>.<key>=<value>`` flags that fix it), or its
      variables do not match the model built from ``encoder_kwargs`` (names every mismatch).
  """
  _check_kind(kind)
  wanted = settings(kind, **encoder_kwargs)
  if path.endswith(('.pth', '.pt', '.tar')):
    trunk, stage = convert_state_dict(kind, read_torch_checkpoint(path, trust_pickle),
                                      **encoder_kwargs)
  else:
    with open(path, 'rb') as f:
      blob = flax.serialization.msgpack_restore(f.read())
    if blob.get('format') != FORMAT:
      raise ConversionError(f'{path} is not an {FORMAT} file')
    if blob['kind'] != kind:
      raise ConversionError(f'{path} holds {blob["kind"]!r} weights, not {kind!r}')
    if 'settings' in blob:
      recorded = json.loads(blob['settings'])
    else:  # written before settings were recorded: only the kwargs given then are known
      recorded = {k: v for k, v in json.loads(blob['encoder_kwargs']).items() if k in wanted}
    _check_settings(path, kind, recorded, wanted, modality or KINDS[kind]['modality'])
    trunk, stage = blob['trunk'], blob['stage']
    want_t, want_s = variable_shapes(kind, modality, **encoder_kwargs)
    problems = []
    for part, tree, want in (('trunk', trunk, want_t), ('stage', stage, want_s)):
      have = {k: tuple(np.shape(v)) for k, v in flax.traverse_util.flatten_dict(tree).items()}
      problems += [f'{part}: missing {"/".join(k)}' for k in want if k not in have]
      problems += [f'{part}: unexpected {"/".join(k)}' for k in have if k not in want]
      problems += [f'{part}: {"/".join(k)} has {have[k]}, model wants {want[k]}'
                   for k in want if k in have and have[k] != want[k]]
    if problems:
      raise ConversionError(f'{path} does not match encoder {kind!r} {encoder_kwargs or ""} '
                            f'(saved with {blob["encoder_kwargs"]}):{_fmt(problems)}')
  as_jax = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
  return as_jax(trunk), as_jax(stage)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kind', required=True, choices=sorted(KINDS))
  parser.add_argument('--torch_checkpoint', required=True, help='.pth / .pth.tar file')
  parser.add_argument('--out', required=True, help='output .msgpack file')
  parser.add_argument('--encoder_kwargs', default='{}',
                      help='JSON architecture kwargs, e.g. \'{"depth": 50}\' (default: paper)')
  parser.add_argument('--trust_pickle', action='store_true',
                      help='allow torch.load(weights_only=False) for trusted files')
  args = parser.parse_args(argv)
  kwargs = json.loads(args.encoder_kwargs)
  sd = read_torch_checkpoint(args.torch_checkpoint, args.trust_pickle)
  trunk, stage = convert_state_dict(args.kind, sd, **kwargs)
  save(args.out, args.kind, trunk, stage, kwargs)
  count = lambda t: sum(int(np.size(a)) for a in jax.tree.leaves(t))
  print(f'{args.kind}: wrote {args.out}: trunk {count(trunk):,} values, '
        f'stage {count(stage):,} values (params + BN statistics); settings '
        f'{json.dumps(settings(args.kind, **kwargs))}')


if __name__ == '__main__':
  main()
