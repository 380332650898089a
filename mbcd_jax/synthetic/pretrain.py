r"""Synthetic upstream pretraining: the embedded benchmark's stand-in for Kinetics / VGGSound.

The paper fine-tunes the last stage of encoders pretrained on a large upstream task. The
embedded benchmark gets the same regime from a synthetic upstream task built with the
generator family of ``mbcd_jax/data/synthetic.py``, but with its own classes (``classes`` of them,
drawn from a seed namespace the downstream worlds never use), no domains, and broad styles:
every example's style interpolates between two of ``styles`` random styles drawn like the
downstream domains' (gain, background, colour cast / motion bias / spectral tilt), so the
upstream style range covers every downstream domain's. Each modality's whole encoder (trunk +
last stage, BatchNorm in training mode, PyTorch's running-statistics rule) is trained with a
linear classifier on its own modality, once::

    python -m mbcd_jax.synthetic.pretrain --config=configs/hac.py:synthetic     # or implicitly, below

and cached as ``<cache>/<modality>-<key>.msgpack`` in the converted-checkpoint format of
``mbcd_jax.encoders.convert`` (plus an ``upstream`` record: the classifier and its held-out
accuracy). ``<key>`` hashes everything that determines the file (the generator settings the
upstream task shares with the benchmark, the encoder's settings, the upstream settings, the
source of the code that computes it (``code_sources``) and the versions of the libraries it runs
on, this module's ``FORMAT_VERSION``), so a changed setting or a code edit there trains a new file
and nothing else does.
The package ships these files (``mbcd_jax/assets/pretrained/``, 0.7 MB, with a manifest of their
weights digests and the settings they fit), like a released checkpoint: with
``config.model.pretrain.source='shipped'`` (the default) a run whose settings they fit loads them,
so every machine fine-tunes the same weights (what the pretraining computes depends a little on
the CPU) and the first run trains nothing upstream. ``python -m mbcd_jax.synthetic.pretrain`` rebuilds them
on this machine and says whether its result differs from the shipped file; ``--ship`` replaces
them.
The file is written to a temporary name and renamed (a killed write leaves no file under the
cache name), under a lock (parallel runs train it once). ``<cache>`` is
``config.model.pretrain.cache_dir``, else ``$MBCD_JAX_PRETRAIN_CACHE``, else
``~/.cache/mbcd_jax/pretrain``.

A DG run asks for it with ``config.model.encoders.<m>.pretrained='synthetic'``: ``resolve``
(called when the run is built) replaces that by the cached file's path, pretraining first if
needed, and the run loads it like any converted checkpoint (``models.load_pretrained``): the
trunk frozen, the last stage and the heads fine-tuned.
"""
import contextlib
import fcntl
import functools
import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import tempfile
import time

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mbcd_jax import MODALITIES, input_pipeline, models, provenance
from mbcd_jax.data import synthetic
from mbcd_jax.encoders import batchnorm
from mbcd_jax import encoders as encoders_lib
from mbcd_jax.encoders import convert
from mbcd_jax.errors import ConfigError

FORMAT_VERSION = 1        # bump when the upstream task changes meaning outside the keyed code
SENTINEL = 'synthetic'    # config.model.encoders.<m>.pretrained value asking for this module
SOURCES = ('shipped', 'build')
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets',
                           'pretrained')   # mbcd_jax/assets/pretrained
MANIFEST = 'manifest.json'
CACHE_ENV = 'MBCD_JAX_PRETRAIN_CACHE'
DEFAULT_CACHE = os.path.join('~', '.cache', 'mbcd_jax', 'pretrain')
_NAMESPACE = 1_000_003    # seeds of the upstream task: disjoint from every downstream world's


def pretrain_config() -> ml_collections.ConfigDict:
  """``config.model.pretrain``: the upstream task and its training (``cache_dir`` aside, every
  key is part of the cache key)."""
  return ml_collections.ConfigDict(dict(
      classes=32,          # upstream classes (the downstream benchmark has 7 / 8)
      styles=32,           # random styles the upstream examples interpolate between
      amp=0.6,             # class-signal amplitude (noise std = data.synthetic.noise)
      steps=300,           # optimizer steps per modality
      batch_size=32,
      lr=1e-3,             # Adam, constant
      seed=0,              # upstream task and training seed
      eval_examples=512,   # held-out upstream examples for the recorded accuracy
      log_every=100,       # steps between progress lines
      cache_dir='',        # '' = $MBCD_JAX_PRETRAIN_CACHE or ~/.cache/mbcd_jax/pretrain
      # 'shipped': the files the package ships (mbcd_jax/assets/pretrained/) where they fit
      # these settings, so every machine fine-tunes the same weights; else (and with 'build')
      # the file trained on this machine, cached.
      source='shipped',
  ))


# ---------------------------------------------------------------- the upstream task
class UpstreamTask:
  """One modality's upstream task: ``classes`` class patterns, broad styles, fresh examples.

  Args:
    spec: the downstream benchmark's knobs; the upstream task shares its input shape, noise
      and style strength (``shift * shift_<m>``), nothing else.
    up: the ``pretrain_config()`` values (a dict).
    m: the modality.
  """

  def __init__(self, spec: synthetic.SyntheticSpec, up: dict, m: str):
    self.m, self.up, self.noise = m, up, spec.noise
    self.shape = spec.shape(m)
    mid = synthetic._MODALITY_IDS[m]  # pylint: disable=protected-access
    self.seed = [_NAMESPACE, up['seed'], mid]
    rng = np.random.default_rng(self.seed + [0])
    self.patterns = np.stack([synthetic._class_pattern(rng, self.shape)  # pylint: disable=protected-access
                              for _ in range(up['classes'])])
    shift = spec.shift * getattr(spec, f'shift_{m}')
    self.styles = [synthetic.draw_style(np.random.default_rng(self.seed + [1, k]), m,
                                        self.shape, shift) for k in range(up['styles'])]

  def example(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One model-ready input (``[T, H, W, C]`` / ``[F, S, 1]``, normalised as the benchmark's
    records) and its label."""
    label = int(rng.integers(len(self.patterns)))
    axes = (1,) if self.m == 'audio' else (1, 2)
    signal = np.roll(self.patterns[label],
                     tuple(int(s) for s in rng.integers(-4, 5, len(axes))), axis=axes)
    x = self.up['amp'] * signal + self.noise * rng.standard_normal(signal.shape, np.float32)
    a, b = rng.choice(len(self.styles), 2, replace=False)
    x = synthetic.apply_style(x, synthetic.mix_styles(self.styles[a], self.styles[b],
                                                      rng.random()))
    if self.m != 'audio':   # the record's uint8 quantisation, as SyntheticSource
      x = np.clip(np.round(128 + 32 * x), 0, 255).astype(np.uint8)
    return input_pipeline.normalize_record({self.m: x})[self.m], label

  def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples: (``[n, ...]`` float32 inputs, ``[n]`` int32 labels)."""
    xs, ys = zip(*(self.example(rng) for _ in range(n)))
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int32)

  def train_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    return self.batch(np.random.default_rng(self.seed + [2, step]), self.up['batch_size'])

  def eval_batch(self) -> tuple[np.ndarray, np.ndarray]:
    return self.batch(np.random.default_rng(self.seed + [3]), self.up['eval_examples'])


# ---------------------------------------------------------------- the cache
def encoder_kwargs(encoder_config) -> dict:
  """The encoder factory's kwargs from ``config.model.encoders.<m>`` (name, pretrained out)."""
  kw = encoder_config.to_dict() if hasattr(encoder_config, 'to_dict') else dict(encoder_config)
  return {k: v for k, v in kw.items() if k not in ('name', 'pretrained')}


def _up_dict(up) -> dict:
  d = up.to_dict() if hasattr(up, 'to_dict') else dict(up)
  full = pretrain_config().to_dict()
  unknown = sorted(set(d) - set(full))
  if unknown:
    raise ConfigError(f'config.model.pretrain: unknown key(s) {unknown}; known: '
                     f'{", ".join(full)}')
  full.update(d)
  if full['source'] not in SOURCES:
    raise ConfigError(f'config.model.pretrain.source: {full["source"]!r}, expected one of '
                     f'{SOURCES}')
  return full


# Keys of config.model.pretrain that choose where the file comes from, not what it holds.
_NOT_KEYED = ('cache_dir', 'log_every', 'source')


# The code a pretrained file depends on: whole modules that exist for it or that it builds on,
# and single functions from the larger modules it borrows from (so that editing the train loop
# in models.py does not retrain the encoders). A new borrowed function goes in the second list
# (tests/test_pretrain.py checks that every ``models.`` / ``input_pipeline.`` name used here is).
_CODE_MODULES = ('mbcd_jax.synthetic.pretrain', 'mbcd_jax.data.synthetic',
                 'mbcd_jax.data.transforms', 'mbcd_jax.encoders')
# Of those, the packages whose every module counts (encoders/: batchnorm.py among them).
_CODE_PACKAGES = ('mbcd_jax.encoders',)
_CODE_FUNCTIONS = (('mbcd_jax.models', 'layer_norm'),
                   ('mbcd_jax.input_pipeline', 'normalize_record'))


@functools.cache
def code_sources() -> tuple:
  """((name, source text), ...) of the code that computes a pretrained file, plus the library
  versions, in a fixed order: a change to any of them changes every cache key."""
  out = []
  for name in _CODE_MODULES:
    mod = importlib.import_module(name)
    names = [name]
    if name in _CODE_PACKAGES:   # every module in it, sorted
      names += sorted(f'{name}.{i.name}' for i in pkgutil.iter_modules(mod.__path__))
    out += [(n, inspect.getsource(importlib.import_module(n))) for n in names]
  out += [(f'{mod}.{fn}', inspect.getsource(getattr(importlib.import_module(mod), fn)))
          for mod, fn in _CODE_FUNCTIONS]
  # The libraries' numerics shape the weights too. The CPU's instruction set does as well, but
  # is recorded (upstream_info['environment']), not keyed: a cache shared by a cluster's mixed
  # nodes should give every run of a study the same file.
  out += sorted(provenance.library_versions().items())
  out.append(('MODALITIES', repr(MODALITIES)))   # the order seeds each modality's task
  return tuple(out)


def code_fingerprint(sources=None) -> str:
  """Hex digest of ``code_sources()`` (or of the given ``((name, text), ...)``)."""
  h = hashlib.sha256()
  for name, text in (code_sources() if sources is None else sources):
    h.update(f'{name}\0{len(text)}\0{text}'.encode())
  return h.hexdigest()[:20]


def settings_key(spec: synthetic.SyntheticSpec, up, m: str, encoder_config) -> str:
  """Hex digest of the settings that determine modality ``m``'s pretrained file, without the
  code and library fingerprint: a shipped file fits a run when this matches."""
  return _digest(_determining(spec, up, m, encoder_config))


def cache_key(spec: synthetic.SyntheticSpec, up, m: str, encoder_config) -> str:
  """Hex digest of everything that determines modality ``m``'s pretrained file."""
  return _digest({**_determining(spec, up, m, encoder_config), 'code': code_fingerprint()})


def _determining(spec, up, m, encoder_config) -> dict:
  up = _up_dict(up)
  return {
      'format_version': FORMAT_VERSION, 'modality': m,
      'encoder': encoder_config['name'],
      'settings': convert.settings(encoder_config['name'], **encoder_kwargs(encoder_config)),
      'input_shape': list(spec.shape(m)), 'noise': spec.noise,
      'style_shift': spec.shift * getattr(spec, f'shift_{m}'),
      'upstream': {k: v for k, v in up.items() if k not in _NOT_KEYED},
  }


def _digest(determining: dict) -> str:
  blob = json.dumps(determining, sort_keys=True, default=float)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_manifest(directory: str | None = None) -> dict:
  """{modality: {'file', 'digest', 'settings_key', 'code', 'environment'}} of the shipped files
  ({} when none are shipped)."""
  path = os.path.join(directory or SHIPPED_DIR, MANIFEST)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def shipped_path(spec: synthetic.SyntheticSpec, up, m: str, encoder_config,
                 directory: str | None = None) -> str | None:
  """The shipped file of modality ``m`` if it was made with these settings, else None.

  Raises:
    ValueError: the shipped file's weights are not the ones its manifest records (a damaged
      or replaced file), naming it.
  """
  entry = read_manifest(directory).get(m)
  if entry is None or entry['settings_key'] != settings_key(spec, up, m, encoder_config):
    return None
  path = os.path.join(directory or SHIPPED_DIR, entry['file'])
  digest = convert.weights_digest(path)
  if digest != entry['digest']:
    raise ConfigError(f'{path}: weights digest {digest}, but {MANIFEST} records '
                     f'{entry["digest"]}; reinstall the package or rebuild with '
                     '`python -m mbcd_jax.synthetic.pretrain --ship`')
  return path


def cache_dir(up) -> str:
  d = _up_dict(up)['cache_dir'] or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
  return os.path.abspath(os.path.expanduser(d))


def cache_path(spec: synthetic.SyntheticSpec, up, m: str, encoder_config) -> str:
  return os.path.join(cache_dir(up), f'{m}-{cache_key(spec, up, m, encoder_config)}.msgpack')


def write_atomic(path: str, data: bytes):
  """Writes ``data`` to a hidden temporary file next to ``path``, then renames it onto
  ``path``: a reader sees the whole file or none, never a partial one under ``path``."""
  d = os.path.dirname(path)
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


@contextlib.contextmanager
def _lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.lock', 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read_upstream(path: str) -> dict:
  """The ``upstream`` record of a pretrained file: {'accuracy', 'steps', ..., 'head'}."""
  with open(path, 'rb') as f:
    blob = flax.serialization.msgpack_restore(f.read())
  rec = json.loads(blob['upstream_info'])
  rec['head'] = blob['upstream_head']
  return rec


# ---------------------------------------------------------------- training
def _upstream_logits(enc, head: nn.Dense, variables: dict, x, *, train: bool):
  """Encoder + parameter-free LayerNorm (as the DG model) + linear classifier.
  Returns (logits ``[B, classes]``, BN moments {'trunk', 'stage'} or None)."""
  moments = None
  if train:
    fmap, mt = enc.trunk.apply(variables['trunk'], x, mutable=[batchnorm.MOMENTS])
    h, ms = enc.stage.apply(variables['stage'], fmap, mutable=[batchnorm.MOMENTS])
    moments = {'trunk': mt.get(batchnorm.MOMENTS, {}), 'stage': ms.get(batchnorm.MOMENTS, {})}
  else:
    h = enc.stage.apply(variables['stage'], enc.trunk.apply(variables['trunk'], x))
  return head.apply({'params': variables['head']}, models.layer_norm(h)), moments


def pretrain_modality(spec: synthetic.SyntheticSpec, up, m: str, encoder_config) -> dict:
  """Trains modality ``m``'s encoder on the upstream task.

  Returns:
    {'trunk': vars, 'stage': vars (each {'params'[, 'batch_stats']}), 'head': params,
     'accuracy': held-out top-1 (%), 'seconds': wall time of the training}.
  """
  up = _up_dict(up)
  task = UpstreamTask(spec, up, m)
  enc = encoders_lib.build(encoder_config['name'], encoder_kwargs(encoder_config))
  head = nn.Dense(up['classes'])
  x0, _ = task.batch(np.random.default_rng(0), 2)
  tx = optax.adam(up['lr'])

  @jax.jit
  def init(x0):   # one compiled init (op-by-op it is dozens of small compilations)
    r_t, r_s, r_h = jax.random.split(jax.random.key(up['seed']), 3)
    trunk = flax.core.unfreeze(enc.trunk.init(r_t, x0))
    stage = flax.core.unfreeze(enc.stage.init(r_s, enc.trunk.apply(trunk, x0)))
    params = {'trunk': trunk.pop('params'), 'stage': stage.pop('params'),
              'head': head.init(r_h, jnp.zeros((1, enc.feature_dim)))['params']}
    stats = {'trunk': trunk.get('batch_stats', {}), 'stage': stage.get('batch_stats', {})}
    return params, stats, tx.init(params)

  params, stats, opt = init(x0)

  def variables(params, stats):
    return {'trunk': {'params': params['trunk'], 'batch_stats': stats['trunk']},
            'stage': {'params': params['stage'], 'batch_stats': stats['stage']},
            'head': params['head']}

  @jax.jit
  def step(params, stats, opt, x, y):
    def loss_fn(p):
      logits, moments = _upstream_logits(enc, head, variables(p, stats), x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), moments
    (loss, moments), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    stats = {k: batchnorm.update_running(stats[k], moments[k]) for k in stats}
    return optax.apply_updates(params, updates), stats, opt, loss

  @jax.jit
  def correct(params, stats, x, y):
    logits, _ = _upstream_logits(enc, head, variables(params, stats), x, train=False)
    return (logits.argmax(-1) == y).sum()

  t0 = time.time()
  for s in range(1, up['steps'] + 1):
    params, stats, opt, loss = step(params, stats, opt, *task.train_batch(s))
    if s % up['log_every'] == 0 or s == up['steps']:
      rate = s / (time.time() - t0)
      logging.info('pretrain %s: step %d/%d, loss %.3f, %.2f steps/s, ETA %.0f s', m, s,
                   up['steps'], float(loss), rate, (up['steps'] - s) / rate)
  seconds = time.time() - t0
  accuracy = upstream_accuracy(enc, head, variables(params, stats), task)
  logging.info('pretrain %s: upstream held-out accuracy %.1f%% (chance %.1f%%) in %.0f s', m,
               accuracy, 100.0 / up['classes'], seconds)
  out = jax.device_get(variables(params, stats))
  return {'trunk': out['trunk'], 'stage': out['stage'], 'head': out['head'],
          'accuracy': accuracy, 'seconds': seconds}


def upstream_accuracy(enc, head, variables: dict, task: UpstreamTask, chunk: int = 128) -> float:
  """Held-out upstream top-1 (%) of an encoder + classifier (inference-mode BN)."""
  x, y = task.eval_batch()
  fn = jax.jit(lambda v, x: _upstream_logits(enc, head, v, x, train=False)[0].argmax(-1))
  hits = sum(int((np.asarray(fn(variables, x[i:i + chunk])) == y[i:i + chunk]).sum())
             for i in range(0, len(y), chunk))
  return 100.0 * hits / len(y)


def _strip_empty(v: dict) -> dict:
  return {k: x for k, x in v.items() if x}


def ensure(spec: synthetic.SyntheticSpec, up, m: str, encoder_config) -> str:
  """The path of modality ``m``'s pretrained file: the shipped one where it fits the settings
  (``source='shipped'``), else the cached one, training and caching it if missing."""
  if _up_dict(up)['source'] == 'shipped':
    path = shipped_path(spec, up, m, encoder_config)
    if path is not None:
      return path
    logging.info('pretrain %s: the shipped encoder does not fit these settings; using the '
                 'cache', m)
  path = cache_path(spec, up, m, encoder_config)
  if os.path.exists(path):
    return path
  with _lock(path):
    if os.path.exists(path):   # another process trained it while we waited
      return path
    logging.info('pretrain %s: no cached encoder at %s, training it (once)', m, path)
    res = pretrain_modality(spec, up, m, encoder_config)
    name, kw = encoder_config['name'], encoder_kwargs(encoder_config)
    blob = {'format': convert.FORMAT, 'kind': name, 'encoder_kwargs': json.dumps(kw),
            'settings': json.dumps(convert.settings(name, **kw)),
            'trunk': jax.tree.map(np.asarray, _strip_empty(res['trunk'])),
            'stage': jax.tree.map(np.asarray, _strip_empty(res['stage'])),
            'upstream_head': jax.tree.map(np.asarray, res['head']),
            'upstream_info': json.dumps({
                'accuracy': res['accuracy'], 'seconds': res['seconds'],
                'key': cache_key(spec, up, m, encoder_config), 'modality': m,
                'code': code_fingerprint(), 'environment': provenance.environment(),
                'settings_key': settings_key(spec, up, m, encoder_config),
                'upstream': {k: v for k, v in _up_dict(up).items() if k not in _NOT_KEYED},
                'format_version': FORMAT_VERSION})}
    write_atomic(path, flax.serialization.msgpack_serialize(blob))
    logging.info('pretrain %s: cached %s (%.1f MB)', m, path, os.path.getsize(path) / 2**20)
  return path


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config.model`` with every ``encoders.<m>.pretrained='synthetic'`` replaced by the
  upstream-pretrained file's path: the shipped file (``config.model.pretrain.source``), else
  the cached one (pretrained first if missing). A copy: the run's config keeps 'synthetic' (the
  path depends on the machine)."""
  mods = tuple(config.data.modalities)
  wanted = [m for m in mods if config.model.encoders[m].get('pretrained') == SENTINEL]
  if not wanted:
    return config.model
  if config.data.source != 'synthetic':
    raise ConfigError(f'config.model.encoders.{wanted[0]}.pretrained={SENTINEL!r} needs '
                     f"config.data.source='synthetic', got {config.data.source!r}")
  spec = input_pipeline.synthetic_spec(config)
  up = config.model.get('pretrain') or pretrain_config()
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  for m in wanted:
    model_config.encoders[m].pretrained = ensure(spec, up, m, config.model.encoders[m])
  return model_config


def ship(paths: dict, directory: str | None = None, settings: dict | None = None) -> dict:
  """Copies built files ``{modality: path}`` into ``directory`` as ``<modality>.msgpack`` and
  writes the manifest (their digests, the settings keys they fit, the code and machine that
  made them). ``settings``: {modality: settings key} for files made before they recorded
  theirs. Returns the manifest."""
  directory = directory or SHIPPED_DIR
  manifest = read_manifest(directory)
  for m, path in paths.items():
    info = read_upstream(path)
    with open(path, 'rb') as f:
      write_atomic(os.path.join(directory, f'{m}.msgpack'), f.read())
    manifest[m] = {'file': f'{m}.msgpack', 'digest': convert.weights_digest(path),
                   'settings_key': (settings or {}).get(m) or info['settings_key'],
                   'upstream_accuracy': info['accuracy'], 'code': info['code'],
                   'environment': info['environment']}
  write_atomic(os.path.join(directory, MANIFEST),
               (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode())
  return manifest


def main(argv):
  """Builds the upstream-pretrained files on this machine (into the cache) and compares them
  with the shipped ones; ``--ship`` makes the built files the shipped ones."""
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  logging.set_verbosity(logging.INFO)
  with config.unlocked():
    config.model.pretrain.source = 'build'
  model_config = resolve(config)
  manifest, built = read_manifest(), {}
  spec = input_pipeline.synthetic_spec(config)
  for m in config.data.modalities:
    path = model_config.encoders[m].get('pretrained') or ''
    if not os.path.exists(path):
      continue
    built[m] = path
    info, digest = read_upstream(path), convert.weights_digest(path)
    print(f'{m}: {path} ({os.path.getsize(path) / 2**20:.2f} MB), upstream accuracy '
          f'{info["accuracy"]:.1f}% (chance {100 / info["upstream"]["classes"]:.1f}%), '
          f'trained in {info["seconds"]:.0f} s, weights digest {digest}')
    entry = manifest.get(m)
    key = settings_key(spec, config.model.pretrain, m, config.model.encoders[m])
    if entry is None or entry['settings_key'] != key:
      print(f'  no shipped {m} file for these settings')
    elif entry['digest'] == digest:
      print(f'  the same weights as the shipped file ({entry["digest"]})')
    else:
      print(f'  DIFFERS from the shipped file ({entry["digest"]}, made on '
            f'{entry["environment"]["cpu"]["model"]} / {entry["environment"]["cpu"]["isa"]}); '
            'runs use the shipped one (config.model.pretrain.source=shipped)')
  if flags.FLAGS.ship:
    ship(built)
    print(f'shipped: {", ".join(sorted(built))} -> {SHIPPED_DIR}')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/hac.py:synthetic).')
  flags.DEFINE_bool('ship', False, 'Copy the built files into the package '
                    '(mbcd_jax/assets/pretrained/) and record them in its manifest.')
  app.run(main)
