"""What a result depends on beyond its config: the machine and the library versions.

XLA compiles for the host's instruction set, so the same code and seed give other float
rounding on a CPU with another vector width (AVX-512 vs AVX2 vs NEON), and the requirements pin
ranges, not versions. Measured: the same pretraining on one AVX2 machine gives other weights
under ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` than by default, so the instruction set XLA may use
(the CPU's, capped by that flag) is part of what a result depends on. Runs and pretrained files
record ``environment()`` so that two results that differ can be told apart as code, settings, or
machine.
"""
import importlib.metadata
import os
import platform

import jax

LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
# Widest first: the first one the CPU has names its vector instruction set.
_ISAS = ('avx512f', 'avx2', 'avx', 'sse4_2', 'sve', 'asimd')


def cpu(cpuinfo: str = '/proc/cpuinfo') -> dict:
  """{'model': the CPU's name, 'isa': its widest vector instruction set ('' if unknown)}, read
  from Linux's ``cpuinfo`` (elsewhere: the platform's processor name, no instruction set)."""
  model, flags = platform.processor() or platform.machine(), set()
  if os.path.exists(cpuinfo):
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'cpu model') and value.strip():
          model = value.strip()
        elif key in ('flags', 'features'):
          flags |= set(value.split())
  return {'model': model, 'isa': next((i for i in _ISAS if i in flags), '')}


def library_versions() -> dict:
  """{library: installed version ('' if not installed)} for ``LIBRARIES``."""
  versions = {}
  for lib in LIBRARIES:
    try:
      versions[lib] = importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
      versions[lib] = ''
  return versions


def xla_isa_cap(xla_flags: str) -> str:
  """The ``--xla_cpu_max_isa`` value in an ``XLA_FLAGS`` string ('' when absent; the last one
  when repeated)."""
  cap = ''
  for flag in xla_flags.split():
    name, _, value = flag.partition('=')
    if name == '--xla_cpu_max_isa':
      cap = value
  return cap


def environment() -> dict:
  """The library versions, the CPU, ``XLA_FLAGS`` and the accelerator the process runs on
  (JSON-ready)."""
  dev = jax.devices()[0]
  return {'libraries': library_versions(), 'cpu': cpu(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'platform': dev.platform,
          'device_kind': dev.device_kind, 'python': platform.python_version()}
