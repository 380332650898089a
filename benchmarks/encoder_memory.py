"""Accelerator memory of one training pass of each paper encoder, and the largest batch that fits.

    JAX_PLATFORMS=cpu python -m benchmarks.encoder_memory [--quick]

For each encoder at the paper's input shape (docs/method.md §6) and each (dtype, remat)
option, compiles -- without running -- the function

    frozen trunk forward (stop_gradient) -> stage forward -> grad w.r.t. the stage's params

for batch sizes B1 < B2 with ``jax.jit(f).lower(...).compile().memory_analysis()`` on the
host CPU, fits ``bytes(B) = fixed + B * per_sample`` and prints the largest B with
``bytes(B) <= 0.9 * capacity`` for a 16 GiB and an 80 GiB accelerator (10% kept for the
runtime, fragmentation and the optimiser state, which is small: the stage's params only).
The last column is the per-sample slope of the stage's forward+backward alone (input = the
trunk's output), the part that ``remat`` shrinks; with the trunk included, the peak is set by
the trunk's early, high-resolution activations, so ``remat`` barely moves the batch limit.

Caveats: XLA's CPU buffer assignment and fusion differ from the GPU's; treat the numbers as
estimates (typically within tens of percent). This is one encoder and one stage pass, not the
whole MBCD step (which runs each stage three times -- two student passes and the EMA teacher --
and holds all three modalities); that budget is the lead's.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbcd_jax import encoders  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top,wrong-import-position

PAPER_INPUTS = {
    'slowfast_r101': (32, 224, 224, 3),   # 32 frames at stride 2
    'slowonly_r50_flow': (8, 224, 224, 2),  # 8 flow frames at stride 4
    'vggsound_r18': (257, 1004, 1),       # log-spectrogram, frequency x time
}
GIB = 2 ** 30


def _abstract(shapes, dtype=jnp.float32):
  tree = {k: jax.ShapeDtypeStruct(v, dtype) for k, v in shapes.items()}
  import flax  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.unflatten_dict(tree)


def step_bytes(kind, batch, dtype, remat, stage_only=False):
  """Total bytes (arguments + outputs + temporaries - aliased) of one compiled pass."""
  enc = encoders.build(kind, dict(dtype=dtype, remat=remat))
  ts, ss = convert.variable_shapes(kind)
  trunk_vars, stage_vars = _abstract(ts), _abstract(ss)
  x = jax.ShapeDtypeStruct((batch,) + PAPER_INPUTS[kind], jnp.float32)

  def loss(params, frozen_stage, fmap):
    feat = enc.stage.apply({**frozen_stage, 'params': params}, fmap)
    return jnp.mean(jnp.square(feat))

  if stage_only:
    fmap = jax.eval_shape(enc.trunk.apply, trunk_vars, x)

    def f(params, frozen_stage, fmap):
      return jax.grad(loss)(params, frozen_stage, fmap)
    args = (stage_vars['params'], {'batch_stats': stage_vars['batch_stats']}, fmap)
  else:
    def f(params, frozen_stage, trunk_vars, x):
      fmap = jax.lax.stop_gradient(enc.trunk.apply(trunk_vars, x))
      return jax.grad(loss)(params, frozen_stage, fmap)
    args = (stage_vars['params'], {'batch_stats': stage_vars['batch_stats']}, trunk_vars, x)
  m = jax.jit(f).lower(*args).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true', help='only float32, no remat')
  parser.add_argument('--batches', default='1,2')
  args = parser.parse_args()
  b1, b2 = (int(b) for b in args.batches.split(','))
  options = [('float32', False)] if args.quick else [
      ('float32', False), ('float32', True), ('bfloat16', False), ('bfloat16', True)]
  print(f'jax {jax.__version__}, backend {jax.default_backend()} (compile-only estimate)\n')
  head = ('| encoder | input (per sample) | dtype | remat | fixed GiB | GiB/sample '
          '| max B @16 GiB | max B @80 GiB | stage-only GiB/sample |')
  print(head)
  print('|' + '---|' * 9)
  for kind, shape in PAPER_INPUTS.items():
    for dtype, remat in options:
      t = time.time()
      m1, m2 = (step_bytes(kind, b, dtype, remat) for b in (b1, b2))
      per = (m2 - m1) / (b2 - b1)
      fixed = m1 - b1 * per
      fit = lambda cap: int(np.floor((0.9 * cap * GIB - fixed) / per)) if per > 0 else -1
      s1, s2 = (step_bytes(kind, b, dtype, remat, stage_only=True) for b in (b1, b2))
      print(f'| {kind} | {"x".join(map(str, shape))} | {dtype} | {remat} | {fixed / GIB:.2f} '
            f'| {per / GIB:.3f} | {fit(16)} | {fit(80)} | {(s2 - s1) / (b2 - b1) / GIB:.4f} |'
            f'  <!-- {time.time() - t:.0f}s -->', flush=True)


if __name__ == '__main__':
  main()
