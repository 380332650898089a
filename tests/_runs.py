"""Shared by the end-to-end tests: run ``python -m mbcd_jax.main`` (or a script) in a subprocess
on the CPU, with a persistent compilation cache so that only the first run of a program pays
for XLA's compile (later runs of the same program load it: a few seconds instead of ~30)."""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(tempfile.gettempdir(), 'mbcd_jax_test_xla_cache')


def env(**extra) -> dict:
  e = dict(os.environ)
  e.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=CACHE,
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', PYTHONPATH=ROOT)
  e.pop('XLA_FLAGS', None)
  e.update(extra)
  return e


def cmd(workdir: str, *flags: str, config: str = 'configs/hac.py:smoke') -> list[str]:
  return [sys.executable, '-m', 'mbcd_jax.main', f'--config={config}', f'--workdir={workdir}',
          *flags]


def run(workdir: str, *flags: str, timeout: float = 300, config: str = 'configs/hac.py:smoke',
        **kw) -> subprocess.CompletedProcess:
  return subprocess.run(cmd(workdir, *flags, config=config), cwd=ROOT, env=env(),
                        capture_output=True, text=True, timeout=timeout, **kw)


def start(workdir: str, *flags: str) -> subprocess.Popen:
  """A background run logging to ``<workdir>.log`` (not a pipe: the logs are verbose, and a
  full pipe nobody reads would stall the run). ``output(p)`` reads it."""
  log = open(f'{workdir}.log', 'w+')
  p = subprocess.Popen(cmd(workdir, *flags), cwd=ROOT, env=env(), stdout=log,
                       stderr=subprocess.STDOUT, text=True)
  p.log = log
  return p


def output(p: subprocess.Popen) -> str:
  p.log.flush()
  with open(p.log.name) as f:
    return f.read()


def rows(workdir: str, drop=('steps_per_sec',)) -> list[dict]:
  """metrics.jsonl without the wall-clock columns."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k not in drop} for l in f]


def summary(workdir: str, drop=('wall_time_s', 'resumed_from_step')) -> dict:
  with open(os.path.join(workdir, 'summary.json')) as f:
    return {k: v for k, v in json.load(f).items() if k not in drop}


def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def wait_for_checkpoint(p: subprocess.Popen, workdir: str, at_least: int,
                        timeout: float = 240, read_output=None) -> int:
  """Waits until ``workdir`` has a checkpoint at step >= ``at_least`` while the run ``p`` is
  alive; returns its step. ``read_output()``: the run's output for the failure message
  (default: its stdout pipe, ``output(p)``), read only on failure."""
  t = time.time()
  while time.time() - t < timeout:
    steps = checkpoint_steps(workdir)
    if steps and steps[-1] >= at_least:
      return steps[-1]
    assert p.poll() is None, (f'the run ended before step {at_least}: '
                              f'{(read_output or (lambda: output(p)))()[-3000:]}')
    time.sleep(0.02)
  raise TimeoutError(workdir)


def final_state(workdir: str, step: int | None = None) -> dict:
  """The TrainState of the checkpoint at ``step`` (default: the latest) as a flat
  {path: numpy array}."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  # Onto this process's first device, whatever mesh wrote it (a multi-process run's too).
  meta = ocp.StandardCheckpointer().metadata(path)
  meta = getattr(meta, 'item_metadata', meta)
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev),
                        getattr(meta, 'tree', meta))
  tree = ocp.StandardCheckpointer().restore(path, target)
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_bitwise_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f'{k} differs'


def last_line(text: str) -> str:
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return lines[-1] if lines else ''
