"""Shared fixtures: a tiny three-modality model and batch that every method can train on."""
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mbcd_jax import methods, models  # pylint: disable=g-import-not-at-top


def python_env(**extra) -> dict:
  """The environment of a Python subprocess a test starts: the clone and tests/ importable, as
  pytest's ``pythonpath`` (pyproject.toml) makes them for the tests themselves."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')]))
  env.update(extra)
  return env

MODS = ('video', 'flow', 'audio')


def tiny_model(num_classes=5, dropout=0.5, freeze_trunk=True, learnable_norm=False,
               modalities=MODS, widths=(6, 5, 4), **variant):
  """``variant``: model-variant keys (feature_norm, feature_dropout, uni_head) to set."""
  enc = ml_collections.ConfigDict({
      'video': {'name': 'frame_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': widths[0]},
      'flow': {'name': 'frame_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
               'width': widths[1]},
      'audio': {'name': 'spec_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': widths[2]},
  })
  mc = ml_collections.ConfigDict(dict(
      encoders=enc, head_hidden=8, head_dropout=dropout, freeze_trunk=freeze_trunk,
      feature_norm='learnable' if learnable_norm else 'parameter_free'))
  mc.update(variant)
  return models.build_model(mc, modalities, num_classes)


def tiny_batch(key=0, batch_size=8, num_classes=5, dtype=jnp.float32):
  k = jax.random.split(jax.random.key(key), 4)
  return {
      'video': jax.random.normal(k[0], (batch_size, 2, 8, 8, 3), dtype),
      'flow': jax.random.normal(k[1], (batch_size, 2, 8, 8, 2), dtype),
      'audio': jax.random.normal(k[2], (batch_size, 8, 8, 1), dtype),
      'label': jax.random.randint(k[3], (batch_size,), 0, num_classes),
  }


def spec(name='mbcd', **overrides):
  cfg = ml_collections.ConfigDict(dict(
      name=name, amd=None, consistency=None, ema=None, distill=None, unimodal_ce=None, amd_base=0.0,
      amd_fixed_p=0.5, alpha=1e-4, ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0,
      temperature=1.0))
  for k, v in overrides.items():
    cfg[k] = v
  return methods.resolve(cfg)


@pytest.fixture
def x64():
  """Runs a test in float64 (finite differences need it), restoring the flag afterwards."""
  old = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', old)


def assert_eight_devices_equal_one(tmp_path, setup: str, compared: str, timeout: int = 600):
  """Three jitted MBCD steps on 1 device and on 8 fake CPU devices give the same metrics and the
  same state leaves, in a subprocess (the device count is fixed when JAX starts).

  Args:
    setup: Python lines (run with ``tests/`` on the path) that define ``model``, ``batch``,
      ``sp`` (a MethodSpec) and ``tx`` (an optax optimizer).
    compared: an expression over ``state`` giving the pytree of state leaves to compare.
  """
  import subprocess, textwrap  # pylint: disable=g-import-not-at-top,multiple-imports
  script = textwrap.dedent(f'''
    import os, sys, functools
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax, numpy as np
    from mbcd_jax import sharding, step
    assert jax.device_count() == 8
  ''') + textwrap.dedent(setup) + textwrap.dedent(f'''
    out = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = sharding.make_mesh(devices)
      repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
      state = jax.device_put(step.init_state(model, sp, tx, jax.random.key(0), batch), repl)
      f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx),
                  in_shardings=(repl, data, repl), out_shardings=(repl, repl))
      b = sharding.shard_batch({{k: np.asarray(v) for k, v in batch.items()}}, mesh)
      assert len(b['video'].sharding.device_set) == len(devices)
      for _ in range(3):
        state, m = f(state, b, jax.random.key(1))
      out.append((jax.device_get({compared}), jax.device_get(m)))
    (s1, m1), (s8, m8) = out
    for k in m1:
      np.testing.assert_allclose(m1[k], m8[k], rtol=2e-5, atol=1e-6, err_msg=k)
    import _trees
    _trees.assert_trees_equal(s8, s1, exact=False, rtol=2e-4, atol=2e-5)
    print('OK', m1['loss'], m8['loss'])
  ''')
  path = tmp_path / 'eight_devices.py'
  path.write_text(script)
  env = {k: v for k, v in python_env().items() if k != 'XLA_FLAGS'}
  res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                       timeout=timeout)
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'OK' in res.stdout
