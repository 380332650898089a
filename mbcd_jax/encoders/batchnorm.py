"""BatchNorm with PyTorch's training semantics, for the encoders' two BN modes.

Inference (the default): normalise with the running statistics ``batch_stats/mean|var``, with
the same arithmetic as ``flax.linen.BatchNorm(use_running_average=True)`` (so models that only
ever run inference, the ``'frozen'`` mode, are bit-identical to Flax's layer).

Training: applied with the collection ``'bn_moments'`` mutable, the layer normalises with the
batch's statistics (mean and *biased* variance over every axis but the channel axis) and
records the batch mean and the *unbiased* variance ``n / (n - 1) * var`` in ``'bn_moments'``.
It does not touch its running statistics: the caller folds the recorded moments in with
:func:`update_running`, PyTorch's rule (``torch.nn.BatchNorm*d``, momentum 0.1)::

    running_mean <- (1 - momentum) running_mean + momentum mean
    running_var  <- (1 - momentum) running_var  + momentum var_unbiased

Keeping the update outside the layer lets a step apply it as often as the reference does
without re-running the layer (a frozen trunk whose output is shared by two passes) and keeps
the step a pure function of explicit state. Flax's own layer cannot be used for this: it uses
the biased variance for the running update and the opposite momentum convention.

Under ``jit`` over a mesh with the batch sharded, the means are over the global batch.
"""
from typing import Any

import flax.linen as nn
from flax.linen import dtypes
import jax
import jax.numpy as jnp

# config.model.bn_mode (models.py): every BN on its running statistics, never updated | the
# port's ``model.train(True)``: batch statistics in training passes, running statistics updated.
FROZEN, PORT = 'frozen', 'port'
MODES = (FROZEN, PORT)

PyTree = Any
MOMENTS = 'bn_moments'
MOMENTUM = 0.1        # torch.nn.BatchNorm default, which the peers' encoders keep


class BatchNorm(nn.Module):
  """BatchNorm over the last (channel) axis. ``[..., C] -> [..., C]`` in ``dtype``.

  Variables: ``params/scale``, ``params/bias``, ``batch_stats/mean``, ``batch_stats/var``
  (float32; the converter's names for PyTorch's weight, bias, running_mean, running_var).

  Attributes:
    epsilon: added to the variance (PyTorch's 1e-5).
    dtype: computation / output dtype (None: from the input and the parameters).
  """
  epsilon: float = 1e-5
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    if self.is_mutable_collection(MOMENTS) and not self.is_initializing():
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      mean = xf.mean(axes)
      var = jnp.square(xf - mean).mean(axes)   # biased: what the batch is normalised with
      n = x.size // c
      if n < 2:
        raise ValueError(f'BatchNorm in training mode needs more than one value per channel, '
                         f'got input shape {x.shape}')
      self.put_variable(MOMENTS, 'mean', mean)
      self.put_variable(MOMENTS, 'var', var * (n / (n - 1)))
    else:
      mean, var = ra_mean.value, ra_var.value
    # The arithmetic of flax.linen.normalization._normalize, step by step.
    y = x - mean
    mul = jax.lax.rsqrt(var + self.epsilon)
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    mul *= scale
    y *= mul
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    y += bias
    return jnp.asarray(y, dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype))


def update_running(running: PyTree, moments: PyTree, momentum: float = MOMENTUM) -> PyTree:
  """PyTorch's running-statistics update, leaf by leaf.

  Args:
    running: a ``batch_stats`` tree (``.../mean``, ``.../var``).
    moments: the ``bn_moments`` tree one training-mode pass recorded (same structure).
  Returns:
    ``(1 - momentum) * running + momentum * moments``.
  """
  return jax.tree.map(lambda r, b: (1.0 - momentum) * r + momentum * b, running, moments)
