"""Joining the other hosts of a multi-host run (jax.distributed), and leaving when one is lost.

Where the hosts come from:
- Cloud TPU VMs, Slurm, Open MPI: JAX finds them itself (`--distributed`, default on TPU VMs).
- Anywhere else (launch/local.py, or hosts started by hand): the environment names them, and rs passes them on (JAX itself reads only the first):
    JAX_COORDINATOR_ADDRESS=host:port   process 0's address
    JAX_NUM_PROCESSES=N                 how many processes in all
    JAX_PROCESS_ID=i                    this one, 0 .. N-1

Bounded, configurable times instead of hangs:
- `init_timeout`: every process must have joined by then, or this one ends with one line
  (JAX alone waits, then aborts with a C++ stack);
- `peer_timeout`: a host that stops answering (killed, machine gone) counts as lost after it
  (JAX's heartbeat timeout), and the survivors stop, so a relaunch resumes from the last
  complete checkpoint. Where the loss reaches Python first (a collective or a save failing),
  the survivor ends with one line (`exit_if_peer_lost`). Where JAX's coordination service
  reports it first (always when process 0, which hosts the service, is the one lost), JAX
  0.10.2 ends the process in C++ (SIGABRT, "the JAX distributed service detected fatal
  errors"): its callback for this cannot be set from Python (nanobind cannot pass the status:
  std::bad_cast), so the launchers in launch/ turn that exit into the one line.
"""
import dataclasses
import os
import re
import sys
import threading

from rs.errors import UserError, one_line

ADDRESS, NUM_PROCESSES, PROCESS_ID = 'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'
PROXY_VARIABLES = ('http_proxy', 'https_proxy', 'grpc_proxy', 'all_proxy')


class ClusterError(UserError):
  """The hosts of a multi-host run cannot be joined as given."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """The hosts as the environment names them (None: JAX's own detection)."""
  address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @classmethod
  def from_environment(cls, env=None) -> 'Cluster':
    env = os.environ if env is None else env
    given = {name: env.get(name) for name in (ADDRESS, NUM_PROCESSES, PROCESS_ID)}
    if not any(given.values()):
      return cls()
    if not all(given.values()):
      missing = ', '.join(name for name, value in given.items() if not value)
      raise ClusterError(f'{missing} not set: an explicit cluster needs {ADDRESS}, '
                         f'{NUM_PROCESSES} and {PROCESS_ID} together (or none, on TPU VMs and '
                         'Slurm)')
    try:
      count, index = int(given[NUM_PROCESSES]), int(given[PROCESS_ID])
    except ValueError:
      raise ClusterError(f'{NUM_PROCESSES}={given[NUM_PROCESSES]!r}, {PROCESS_ID}='
                         f'{given[PROCESS_ID]!r}: give whole numbers') from None
    if not 0 <= index < count:
      raise ClusterError(f'{PROCESS_ID}={index} with {NUM_PROCESSES}={count}: give an id '
                         f'from 0 to {count - 1}, a different one on each host')
    if ':' not in given[ADDRESS]:
      raise ClusterError(f'{ADDRESS}={given[ADDRESS]!r}: give host:port of process 0')
    return cls(given[ADDRESS], count, index)

  @property
  def explicit(self) -> bool:
    return self.address is not None


def check_proxies(address: str | None, env=None) -> None:
  """A proxy variable makes gRPC send the coordinator's traffic to the proxy, and the hosts
  never meet (JAX only warns): refuse, unless no_proxy exempts the coordinator's host."""
  env = os.environ if env is None else env
  set_ = [name for name in PROXY_VARIABLES if env.get(name) or env.get(name.upper())]
  if not set_:
    return
  host = address.rsplit(':', 1)[0] if address else None
  exempt = {h.strip() for h in (env.get('no_proxy', '') + ',' + env.get('NO_PROXY', '')).split(',')}
  if host and (host in exempt or '*' in exempt):
    return
  raise ClusterError(f"{', '.join(set_)} set: the hosts' connections to the coordinator"
                     f"{' ' + host if host else ''} would go through the proxy and never meet. "
                     f"Unset them, or add the coordinator's host to no_proxy")


def initialize(init_timeout: float = 300, peer_timeout: float = 100) -> None:
  """jax.distributed.initialize with the environment's cluster (if it names one), ending the
  process with one line if the others have not all joined after `init_timeout` seconds."""
  import jax
  cluster = Cluster.from_environment()
  check_proxies(cluster.address)
  joined = threading.Event()

  def give_up():
    if not joined.wait(init_timeout):
      where = f' at {cluster.address}' if cluster.explicit else ''
      _exit_with(f'the other hosts did not all join the coordinator{where} within '
                 f'{init_timeout:g} s (--init_timeout): start the same command on every host '
                 '(the launchers in launch/ do), and check that process 0 is up and its port is '
                 'open between the hosts')

  threading.Thread(target=give_up, daemon=True, name='rs-init-timeout').start()
  kwargs = {}
  if cluster.explicit:
    kwargs = dict(coordinator_address=cluster.address, num_processes=cluster.num_processes,
                  process_id=cluster.process_id)
  # JAX's own limit comes later than ours, so this process ends with our line, not its abort.
  jax.distributed.initialize(initialization_timeout=int(init_timeout) + 60,
                             heartbeat_timeout_seconds=int(peer_timeout), **kwargs)
  joined.set()


# What a collective or the coordination service raises in the survivors when a host is gone.
PEER_LOST = re.compile(r'Gloo \w+ failed|Connection closed by peer|Connection reset by peer|'
                       r'heartbeat timeout|stopped sending heartbeats|Barrier failed|'
                       r'Socket closed|coordination service', re.IGNORECASE)


def exit_if_peer_lost(error: BaseException) -> None:
  """In a multi-host run, an error that says another host is gone ends this process at once
  with one line (os._exit: JAX's shutdown at exit would wait for the lost host, then abort)."""
  import jax
  if not (jax.distributed.is_initialized() and PEER_LOST.search(str(error))):
    return
  _exit_with(f'another host of this run was lost ({one_line(error, limit=160)}), so host '
             f'{jax.process_index()} stopped too: start the same command on every host again '
             'to resume from the last complete checkpoint')


def sync_hosts(name: str) -> None:
  """Every host waits here until all have reached `name` (nothing to do on one host)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _exit_with(message: str) -> None:
  """Ends the process from any thread, with one line (no Python or C++ clean-up that could
  wait on the lost peer)."""
  sys.stdout.flush()
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  os._exit(1)
