"""A stand-in for `gcloud` in the tests of launch/tpu.py: Cloud TPU VM slices whose workers are
processes on this machine, so a pod run can be launched, stopped, preempted and resumed offline.

The tests put a `gcloud` that runs this file first on PATH (`install`). It:
- records every call (argv) in DIR/calls.jsonl, and refuses, as gcloud does, a command shape it
  does not know: unknown flags, a missing --zone, a --worker that is not `all` or a number;
- keeps slices and queued resources in DIR/state.json (queued resources pass through
  WAITING_FOR_RESOURCES and PROVISIONING to ACTIVE, one state per describe);
- carries out `tpu-vm ssh --worker=all --command=C` by running `bash -c C` once per worker, all
  at once, each in the worker's own home (DIR/nodes/<name>.<incarnation>/worker-<i>: a slice
  created again is new machines) with TPU_WORKER_ID and the cluster's environment
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, launch/local.py's), which is
  what a TPU VM's metadata gives JAX; and `tpu-vm scp` by copying into or out of those homes.

Knobs, read from the environment at each call:
  FAKE_GCLOUD_WORKERS   workers per slice (2)        FAKE_GCLOUD_DEVICES  CPU devices each (1)
  FAKE_GCLOUD_FIREWALL  the firewall rules as JSON (default: the rule GCP makes for TPUs)
  FAKE_GCLOUD_DROP      `<worker>:<text>`: ssh commands containing text fail on that worker

`preempt(dir, name)` does what a preemption does: the slice reads PREEMPTED and its workers'
processes are killed.
"""
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_FIREWALL = [{'name': 'default-allow-tpu', 'network':
                     'https://www.googleapis.com/compute/v1/projects/p/global/networks/default',
                     'direction': 'INGRESS', 'sourceRanges': ['10.128.0.0/9'],
                     'allowed': [{'IPProtocol': 'tcp', 'ports': ['8470-8476', '11211']}]}]
QUEUED_STATES = ('WAITING_FOR_RESOURCES', 'PROVISIONING', 'ACTIVE')

# The command shapes of ../shared/reference (gcloud's reference): flags each command takes.
COMMON = {'--zone', '--project', '--format', '--quiet'}
SHAPES = {
    ('tpu-vm', 'create'): {'--accelerator-type', '--version', '--spot', '--preemptible',
                           '--reserved', '--internal-ips', '--metadata', '--data-disk'},
    ('tpu-vm', 'describe'): set(),
    ('tpu-vm', 'list'): set(),
    ('tpu-vm', 'delete'): {'--async'},
    ('tpu-vm', 'ssh'): {'--worker', '--command', '--internal-ip'},
    ('tpu-vm', 'scp'): {'--worker', '--recurse', '--internal-ip'},
    ('queued-resources', 'create'): {'--node-id', '--accelerator-type', '--runtime-version',
                                     '--spot', '--reserved', '--guaranteed', '--best-effort',
                                     '--valid-until-duration'},
    ('queued-resources', 'describe'): set(),
    ('queued-resources', 'list'): set(),
    ('queued-resources', 'delete'): {'--force', '--async'},
}
REQUIRED = {('tpu-vm', 'create'): {'--accelerator-type', '--version'},
            ('tpu-vm', 'ssh'): {'--worker', '--command'},
            ('tpu-vm', 'scp'): {'--worker'},
            ('queued-resources', 'create'): {'--node-id', '--accelerator-type',
                                             '--runtime-version'}}


def install(directory: str) -> str:
  """A bin directory with `gcloud` (this fake, state in `directory`) to put first on PATH."""
  bin_dir = os.path.join(directory, 'bin')
  os.makedirs(bin_dir, exist_ok=True)
  path = os.path.join(bin_dir, 'gcloud')
  with open(path, 'w') as f:
    f.write(f'#!/bin/sh\nFAKE_GCLOUD_DIR={directory} exec {sys.executable} {__file__} "$@"\n')
  os.chmod(path, 0o755)
  return bin_dir


def calls(directory: str) -> list[list[str]]:
  path = os.path.join(directory, 'calls.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


@contextlib.contextmanager
def state(directory: str):
  """The slices and queued resources, locked while they change."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'state.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(directory, 'state.json')
    data = {'nodes': {}, 'queued': {}}
    if os.path.exists(path):
      with open(path) as f:
        data = json.load(f)
    yield data
    with open(path + '.tmp', 'w') as f:
      json.dump(data, f)
    os.replace(path + '.tmp', path)


def preempt(directory: str, name: str) -> None:
  with state(directory) as s:
    s['nodes'][name]['state'] = 'PREEMPTED'
    kill_workers(s['nodes'][name])


def kill_workers(node: dict) -> None:
  """SIGKILL to every process started on the node's workers (found by their environment)."""
  mark = f'FAKE_GCLOUD_NODE={node["home"]}'.encode()
  for pid in map(int, filter(str.isdigit, os.listdir('/proc'))):
    try:
      with open(f'/proc/{pid}/environ', 'rb') as f:
        if mark in f.read().split(b'\0'):
          os.kill(pid, signal.SIGKILL)
    except OSError:
      pass


def worker_home(node: dict, worker: int) -> str:
  return os.path.join(node['home'], f'worker-{worker}')


def fail(command: str, message: str, code: int = 1):
  sys.stderr.write(f'ERROR: (gcloud.{command}) {message}\n')
  sys.exit(code)


def parse(argv: list[str]) -> tuple[tuple[str, ...], list[str], dict[str, str]]:
  """(group, verb), positionals, flags; exits as gcloud does on a shape it does not know."""
  if argv[:2] == ['compute', 'firewall-rules']:
    key, rest = ('firewall-rules', argv[2]), argv[3:]
    allowed = {'--filter'}
  elif argv[:2] == ['compute', 'tpus'] and len(argv) > 3:
    key, rest = (argv[2], argv[3]), argv[4:]
    allowed = SHAPES.get(key)
  else:
    fail('compute', f'unknown command: {" ".join(argv[:4])}', 2)
  command = '.'.join(['compute', 'tpus', *key])
  if allowed is None:
    fail(command, 'unknown command', 2)
  positionals, flags = [], {}
  for arg in rest:
    if arg.startswith('--'):
      name, _, value = arg.partition('=')
      if name not in allowed | COMMON:
        fail(command, f'unrecognized arguments: {arg}', 2)
      flags[name] = value
    else:
      positionals.append(arg)
  missing = REQUIRED.get(key, set()) - set(flags)
  if key[0] != 'firewall-rules' and '--zone' not in flags:
    missing.add('--zone')
  if missing:
    fail(command, f'argument {", ".join(sorted(missing))}: must be specified', 2)
  worker = flags.get('--worker')
  if worker is not None and worker != 'all' and not worker.isdigit():
    fail(command, f'--worker={worker}: give all or a worker number', 2)
  return key, positionals, flags


def create_node(s: dict, directory: str, name: str, accelerator: str, version: str,
                spot: bool) -> None:
  if name in s['nodes']:
    fail('compute.tpus.tpu-vm.create', f'ALREADY_EXISTS: node {name} exists')
  incarnation = s.setdefault('incarnations', {}).get(name, 0) + 1
  s['incarnations'][name] = incarnation
  home = os.path.join(directory, 'nodes', f'{name}.{incarnation}')
  workers = int(os.environ.get('FAKE_GCLOUD_WORKERS', '2'))
  for i in range(workers):
    os.makedirs(os.path.join(home, f'worker-{i}'), exist_ok=True)
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  s['nodes'][name] = {'state': 'READY', 'acceleratorType': accelerator, 'runtimeVersion': version,
                      'spot': spot, 'workers': workers, 'home': home, 'port': port,
                      'devices': int(os.environ.get('FAKE_GCLOUD_DEVICES', '1'))}


def describe_node(name: str, node: dict) -> dict:
  return {'name': f'projects/p/locations/z/nodes/{name}', 'state': node['state'],
          'acceleratorType': node['acceleratorType'], 'runtimeVersion': node['runtimeVersion'],
          'schedulingConfig': {'spot': node['spot']},
          'networkConfig': {'network': 'projects/p/global/networks/default'},
          'networkEndpoints': [{'ipAddress': f'127.0.0.{i + 1}'}
                               for i in range(node['workers'])]}


def worker_environment(node: dict, worker: int) -> dict[str, str]:
  spec = importlib.util.spec_from_file_location('launch_local',
                                                os.path.join(ROOT, 'launch', 'local.py'))
  local = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(local)
  env = local.process_environment(worker, node['workers'], node['devices'], node['port'])
  home = worker_home(node, worker)
  env.update(HOME=home, TPU_WORKER_ID=str(worker), FAKE_GCLOUD_NODE=node['home'],
             JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{node["port"]}',
             RS_TPU_DEVICES=os.path.join(home, 'accel*'),
             RS_TPU_LOCKFILE=os.path.join(home, 'libtpu_lockfile'))
  return env


def ssh(node: dict, workers: list[int], command: str) -> int:
  drop = os.environ.get('FAKE_GCLOUD_DROP', '')
  outputs, codes = [''] * len(workers), [0] * len(workers)

  def one(k, i):
    dropped_worker, _, text = drop.partition(':')
    if drop and dropped_worker == str(i) and text in command:
      outputs[k] = f'ssh: connect to host 127.0.0.{i + 1} port 22: Connection timed out\n'
      codes[k] = 255
      return
    done = subprocess.run(['bash', '-c', command], cwd=worker_home(node, i),
                          env=worker_environment(node, i), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    outputs[k], codes[k] = done.stdout, done.returncode

  threads = [threading.Thread(target=one, args=(k, i)) for k, i in enumerate(workers)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  sys.stdout.write(''.join(outputs))
  return max(codes)


def main(argv: list[str]) -> int:
  directory = os.environ['FAKE_GCLOUD_DIR']
  with open(os.path.join(directory, 'calls.jsonl'), 'a') as f:
    f.write(json.dumps(argv) + '\n')
  key, positionals, flags = parse(argv)
  command = '.'.join(['compute', 'tpus', *key])
  if key == ('firewall-rules', 'list'):
    print(os.environ.get('FAKE_GCLOUD_FIREWALL') or json.dumps(DEFAULT_FIREWALL))
    return 0
  name = positionals[0] if positionals else None
  with state(directory) as s:
    nodes, queued = s['nodes'], s['queued']
    if key == ('tpu-vm', 'create'):
      create_node(s, directory, name, flags['--accelerator-type'], flags['--version'],
                  '--spot' in flags)
      return 0
    if key == ('queued-resources', 'create'):
      if name in queued:
        fail(command, f'ALREADY_EXISTS: queued resource {name} exists')
      queued[name] = {'state': QUEUED_STATES[0], 'node': flags['--node-id'],
                      'accelerator': flags['--accelerator-type'],
                      'version': flags['--runtime-version'], 'spot': '--spot' in flags}
      return 0
    if key == ('queued-resources', 'describe'):
      if name not in queued:
        fail(command, f'NOT_FOUND: queued resource {name} not found')
      q = queued[name]
      print(json.dumps({'name': name, 'state': {'state': q['state']}}))
      if q['state'] != 'ACTIVE':  # the next describe sees the next state
        q['state'] = QUEUED_STATES[QUEUED_STATES.index(q['state']) + 1]
        if q['state'] == 'ACTIVE':
          create_node(s, directory, q['node'], q['accelerator'], q['version'], q['spot'])
      return 0
    if key == ('queued-resources', 'delete'):
      if name not in queued:
        fail(command, f'NOT_FOUND: queued resource {name} not found')
      node = nodes.get(queued[name]['node'])
      if node is not None and '--force' not in flags:
        fail(command, f'FAILED_PRECONDITION: queued resource {name} has a node: use --force')
      if node is not None:
        kill_workers(node)
        del nodes[queued[name]['node']]
      del queued[name]
      return 0
    if key[1] == 'list':
      table = nodes if key[0] == 'tpu-vm' else queued
      print(json.dumps([{'name': n} for n in table]))
      return 0
    if name is None or (key[1] != 'scp' and name not in nodes):
      fail(command, f'NOT_FOUND: node {name} not found')
    if key == ('tpu-vm', 'describe'):
      print(json.dumps(describe_node(name, nodes[name])))
      return 0
    if key == ('tpu-vm', 'delete'):
      kill_workers(nodes[name])
      del nodes[name]
      return 0
    if key == ('tpu-vm', 'scp'):
      source, dest = positionals
      name = (source if ':' in source else dest).split(':', 1)[0]
      if name not in nodes:
        fail(command, f'NOT_FOUND: node {name} not found')
    node = dict(nodes[name])
  if node['state'] != 'READY':
    fail(command, f'{name} is {node["state"]}: Connection refused', 255)
  workers = (list(range(node['workers'])) if flags['--worker'] == 'all'
             else [int(flags['--worker'])])
  if key == ('tpu-vm', 'ssh'):
    return ssh(node, workers, flags['--command'])
  source, dest = positionals  # scp: into every worker's home, or out of one
  for i in workers:
    home = worker_home(node, i)
    if ':' in dest:
      target = os.path.join(home, dest.split(':', 1)[1] or '.')
      (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
    else:
      remote = os.path.join(home, source.split(':', 1)[1])
      if not os.path.exists(remote):
        fail(command, f'scp: {source.split(":", 1)[1]}: No such file or directory')
      shutil.copy(remote, dest)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
