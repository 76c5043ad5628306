"""N processes of one rs command on this machine, as the hosts of a pod (CPU, gloo collectives).

  python launch/local.py --processes=4 --devices=2 -- python -m rs.main \\
      --config=configs/tiny.py --workdir=/tmp/run

Each process gets `--devices` CPU devices and the cluster in its environment
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, which rs.cli.start_jax passes to
jax.distributed.initialize), as the hosts of a cluster without a scheduler get theirs. The
tests start their hosts with it, and anyone can try multi-host behaviour on a laptop with it:
SIGTERM stops every process at one step, a killed process takes the others down instead of
hanging them, the resumed run ends as an uninterrupted one (docs/launch.md).

Every process writes LOGS/process-<i>.log; their lines are also shown here, prefixed `[i]`.
SIGTERM or SIGINT to this launcher is passed on to every process (rs saves and exits 0). When a
process fails, the others get `--grace` seconds to stop by themselves (rs's peer-loss timeout),
then are killed. The exit status is 0 when every process exited 0, else the first failure's.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

PROXY_VARIABLES = ('http_proxy', 'https_proxy', 'grpc_proxy', 'all_proxy')  # rs.distributed's


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_environment(index: int, processes: int, devices: int, port: int,
                        base: dict | None = None) -> dict[str, str]:
  """Process `index`'s environment: the cluster, `devices` CPU devices (other XLA flags kept),
  gloo collectives, a compilation cache of its own (under any JAX_COMPILATION_CACHE_DIR: a
  program compiled for another host's devices hangs both), and localhost kept off any proxy."""
  env = dict(os.environ if base is None else base)
  xla_flags = re.sub(r'--xla_force_host_platform_device_count=\S*', '', env.get('XLA_FLAGS', ''))
  env.update(JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES=str(processes),
             JAX_PROCESS_ID=str(index), JAX_PLATFORMS='cpu',
             JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', PYTHONUNBUFFERED='1',
             XLA_FLAGS=f'{xla_flags} --xla_force_host_platform_device_count={devices}'.strip())
  if env.get('JAX_COMPILATION_CACHE_DIR'):  # one per process: hosts must not share programs
    env['JAX_COMPILATION_CACHE_DIR'] = os.path.join(env['JAX_COMPILATION_CACHE_DIR'],
                                                    f'process-{index}-of-{processes}')
  if any(env.get(name) or env.get(name.upper()) for name in PROXY_VARIABLES):
    no_proxy = ','.join(filter(None, [env.get('no_proxy', ''), 'localhost']))
    env.update(no_proxy=no_proxy, NO_PROXY=no_proxy)
  return env


class Cluster:
  """The processes, their logs and their exit statuses."""

  def __init__(self, command: list[str], processes: int, devices: int, logs: str,
               port: int | None = None, echo: bool = True):
    os.makedirs(logs, exist_ok=True)
    port = port or free_port()
    self.logs = [os.path.join(logs, f'process-{i}.log') for i in range(processes)]
    self.procs = []
    self._threads = []
    for i in range(processes):
      proc = subprocess.Popen(command, env=process_environment(i, processes, devices, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # a terminal's Ctrl-C reaches us only
      self.procs.append(proc)
      thread = threading.Thread(target=self._copy, args=(i, proc, echo), daemon=True)
      thread.start()
      self._threads.append(thread)

  def _copy(self, index: int, proc, echo: bool) -> None:
    """Reads the process's output as it comes (a full pipe would stop the process inside a
    collective and hang its peers), into its log and, prefixed, onto this terminal."""
    with open(self.logs[index], 'w') as log:
      for line in proc.stdout:
        log.write(line)
        log.flush()
        if echo:
          sys.stdout.write(f'[{index}] {line}')
          sys.stdout.flush()

  def signal_all(self, signum: int) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signum)
        except ProcessLookupError:
          pass

  def wait(self, grace: float) -> list[int]:
    """Waits for every process; once one fails, the rest get `grace` seconds, then SIGKILL."""
    failed_at = None
    while any(p.poll() is None for p in self.procs):
      if failed_at is None and any(p.poll() not in (None, 0) for p in self.procs):
        failed_at = time.monotonic()
      if failed_at is not None and time.monotonic() - failed_at > grace:
        self.signal_all(signal.SIGKILL)
      time.sleep(0.2)
    for thread in self._threads:
      thread.join()
    return [p.returncode for p in self.procs]


def process_pids(launcher_pid: int) -> dict[int, int]:
  """{JAX_PROCESS_ID: pid} of the processes a running launcher started (read from /proc), for
  whoever wants to signal one host of it (the tests, scripts/preemption_cost.py)."""
  found = {}
  for pid in map(int, filter(str.isdigit, os.listdir('/proc'))):
    try:
      with open(f'/proc/{pid}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{pid}/environ', 'rb') as f:
        environ = f.read().split(b'\0')
    except OSError:
      continue
    if parent == launcher_pid:
      for item in environ:
        if item.startswith(b'JAX_PROCESS_ID='):
          found[int(item.split(b'=', 1)[1])] = pid
  return found


# How JAX 0.10.2 ends a process whose coordination service reported a dead host (rs.distributed).
PEER_LOST_ABORT = 'the JAX distributed service detected fatal errors'


def describe(statuses: list[int], logs: list[str]) -> str:
  """One line: which processes ended how."""
  def how(code, log):
    if code == 0:
      return 'exited 0'
    if code == -signal.SIGABRT and PEER_LOST_ABORT in _read(log):
      return 'stopped after losing a peer'
    if code < 0:
      return f'killed by {signal.Signals(-code).name}'
    return f'exited {code}'
  groups = {}
  for i, (code, log) in enumerate(zip(statuses, logs)):
    groups.setdefault(how(code, log), []).append(str(i))
  return '; '.join(f"process{'es' if len(ids) > 1 else ''} {','.join(ids)} {text}"
                   for text, ids in groups.items())


def _read(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   usage='%(prog)s [options] -- COMMAND ...')
  parser.add_argument('--processes', type=int, default=2, help='Processes (hosts) to start.')
  parser.add_argument('--devices', type=int, default=1, help='CPU devices per process.')
  parser.add_argument('--logs', default='logs/local', help='Directory for process-<i>.log.')
  parser.add_argument('--port', type=int, default=None, help='Coordinator port (default: free).')
  parser.add_argument('--grace', type=float, default=120.0, help='Seconds the others get to '
                      'stop by themselves once one process has failed.')
  parser.add_argument('--quiet', action='store_true', help='Only the logs, nothing echoed.')
  parser.add_argument('command', nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ['--'] else args.command
  if not command:
    parser.error('give the command after --, e.g. -- python -m rs.main --config=... '
                 '--workdir=...')
  if args.processes < 1 or args.devices < 1:
    parser.error(f'--processes={args.processes}, --devices={args.devices}: give 1 or more')
  try:
    cluster = Cluster(command, args.processes, args.devices, args.logs, args.port,
                      echo=not args.quiet)
  except OSError as e:  # no such program, or the logs directory cannot be made
    sys.exit(f'launch/local.py: error: {e}: check the command after -- and --logs')
  for signum in (signal.SIGTERM, signal.SIGINT):  # passed on: each process saves and stops
    signal.signal(signum, lambda s, _: cluster.signal_all(signal.SIGTERM))
  statuses = cluster.wait(args.grace)
  print(f'launch/local.py: {describe(statuses, cluster.logs)} (logs in {args.logs}/)',
        file=sys.stderr)
  return next((code if code > 0 else 1 for code in statuses if code != 0), 0)


if __name__ == '__main__':
  sys.exit(main())
