"""``jax.distributed.initialize`` from flags or the environment, before any JAX computation.

Where the coordinates come from, in order:
  1. explicit flags ``--coordinator_address=host:port --num_processes=N --process_id=i``;
  2. JAX's own cluster detection (``jax.distributed.initialize()`` with no arguments) when the
     environment names a cluster: a Cloud TPU VM slice with several workers, SLURM with more than
     one task (``srun``), ``JAX_COORDINATOR_ADDRESS`` (+ ``JAX_NUM_PROCESSES``,
     ``JAX_PROCESS_ID``) set by a launcher, or ``MBCD_DISTRIBUTED=auto`` (launch/tpu_vm.sh: on a
     TPU VM slice JAX finds the workers through the metadata server);
  3. otherwise nothing: one process, all its local devices.

On CPU the cross-process collectives need an implementation (gloo); it is selected before
initialising, and is harmless on GPU/TPU.
"""
import os

from absl import logging
import jax
from mbcd_jax.errors import ConfigError


def cluster_env() -> str | None:
  """Which multi-process environment this is, or None for a single process."""
  if os.environ.get('MBCD_DISTRIBUTED') == 'auto':   # launch/tpu_vm.sh: let JAX detect it
    return 'MBCD_DISTRIBUTED=auto'
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  if int(os.environ.get('SLURM_NTASKS', os.environ.get('SLURM_NPROCS', '1')) or 1) > 1 \
      and 'SLURM_JOB_ID' in os.environ and 'SLURM_PROCID' in os.environ:
    return 'slurm'
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return 'tpu'
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids=None) -> bool:
  """Starts JAX's distributed runtime if this is a multi-process run. Returns whether it did.

  Raises:
    ValueError: incomplete explicit flags.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if any(x is not None for x in explicit) and not all(x is not None for x in explicit):
    raise ConfigError('--coordinator_address, --num_processes and --process_id go together '
                     f'(got {coordinator_address!r}, {num_processes!r}, {process_id!r})')
  env = cluster_env()
  if coordinator_address is None and env is None:
    return False
  if coordinator_address is None and env == 'JAX_COORDINATOR_ADDRESS' and \
      'JAX_NUM_PROCESSES' in os.environ:
    # JAX reads the address itself but not the count and rank: pass them on.
    coordinator_address = os.environ['JAX_COORDINATOR_ADDRESS']
    num_processes = int(os.environ['JAX_NUM_PROCESSES'])
    process_id = int(os.environ['JAX_PROCESS_ID'])
  try:  # CPU collectives across processes; GPU/TPU ignore the flag.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  except (AttributeError, ValueError) as e:
    logging.warning('jax_cpu_collectives_implementation=gloo not available: %s', e)
  if coordinator_address is not None:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  else:
    jax.distributed.initialize()
  logging.info('jax.distributed (%s): process %d of %d, %d local / %d global devices',
               env or 'flags', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True
