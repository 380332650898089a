"""Data parallelism with ``jit`` + ``NamedSharding`` (JAX's current replacement for a
``pmap``-ed step): a 1-D mesh over every device of every process, batch split along it, state
replicated. XLA inserts the gradient all-reduce; sums over the batch (AMD's confidences, the
losses' means) are global, so the step is the same program on 1 or N devices."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from mbcd_jax.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'config.data.batch_size'):
  n = mesh.devices.size
  if global_batch % n:
    raise ConfigError(f'{what}={global_batch} is not divisible by the {n} devices of the mesh; '
                     f'use a multiple of {n}')


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This process's rows of a global batch -> global arrays sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
