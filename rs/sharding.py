"""The device mesh and the shardings of the state and of batches (data parallel)."""
import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from rs.errors import ConfigError


def create_mesh(devices=None) -> Mesh:
  """A 1-D ('data',) mesh over `devices` (default: all, every host), GSPMD propagation."""
  if devices is None:
    return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(AxisType.Auto,))
  return Mesh(np.asarray(devices), ('data',), axis_types=(AxisType.Auto,))


def request_cpu_devices(count: int) -> None:
  """Give the CPU backend `count` devices (call before JAX starts its backends). XLA:CPU runs
  one program's operations nearly one at a time, so a batch split over one device per core
  keeps more cores busy (docs/performance.md). An explicit
  XLA_FLAGS=--xla_force_host_platform_device_count wins. Accelerator backends are unaffected.
  The devices wait at collectives as long as PATIENT_CPU_COLLECTIVES says, however many."""
  patient_cpu_collectives()
  if count > 1 and 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
    jax.config.update('jax_num_cpu_devices', count)


# A step over several CPU devices meets at each collective, and XLA:CPU aborts the process when
# a device's thread has waited 40 s there for the others. Devices that share few cores take
# turns, so one large step (or a busy machine) can keep a thread waiting longer: the RS-14 of
# configs/tiny.py at 1,024 px on 8 devices and 2 cores aborted so (2026-12-04). rs waits an
# hour before aborting, and warns after two minutes.
PATIENT_CPU_COLLECTIVES = ('--xla_cpu_collective_call_warn_stuck_timeout_seconds=120',
                           '--xla_cpu_collective_call_terminate_timeout_seconds=3600')


def patient_cpu_collectives() -> None:
  """Adds PATIENT_CPU_COLLECTIVES to XLA_FLAGS (before JAX starts its backends), each unless
  XLA_FLAGS already sets it."""
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f for f in PATIENT_CPU_COLLECTIVES if f.split('=')[0] not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *extra]).strip()


def one_program_at_a_time(mesh: Mesh) -> bool:
  """Whether programs with collectives over `mesh` must run one at a time: on several CPU
  devices. XLA:CPU runs programs that do not depend on each other concurrently, each device's
  part a task on one shared thread pool, and a device's task waits at a collective until the
  program's other devices arrive. With two such programs in flight, the threads can all be
  waiting at one program's all-reduce for a device whose task is queued behind the other's:
  a deadlock, which XLA:CPU ends by aborting the process once its collective timeout passes
  (an evaluation's 2 x 40 independent 8-device programs on a busy 2-core machine:
  scripts/cpu_collectives_deadlock.py; an EfficientNet test run under the full suite,
  2026-12-03/04). Across hosts, their gloo all-reduces can also meet in different orders
  (tests/test_multihost.py). TPU and GPU devices run programs in the order they were started."""
  return mesh.devices.flat[0].platform == 'cpu' and mesh.size > 1


def cpu_cores() -> int:
  """The cores this process may run on (its CPU affinity, as XLA:CPU counts them)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P('data'))


def check_batch_size(name: str, batch_size: int, mesh: Mesh, flag: str | None = None) -> None:
  """The global batch must split evenly over the mesh's devices and over the hosts, each of
  which feeds its own rows (a mesh may use only some devices of a host). The error names
  `flag` (default: --config.NAME) as the fix."""
  devices, hosts = mesh.devices.size, jax.process_count()
  multiple = math.lcm(devices, hosts)
  for n, what in ((devices, 'devices'), (hosts, 'hosts')):
    if batch_size % n:
      raise ConfigError(f'{name}={batch_size} does not divide over {n} {what}: set '
                        f'{flag or "--config." + name} to a multiple of {multiple}')


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy arrays (this host's rows) -> one global array per key."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
