"""Cloud TPU VM runs of rs from this machine: create a slice, set it up with this checkout, run a
config on every worker, keep it going through preemptions, collect its logs, and delete it.

  python launch/tpu.py create --name=rs350 --zone=us-central2-b --accelerator=v4-32 --spot
  python launch/tpu.py setup  --name=rs350 --zone=us-central2-b
  python launch/tpu.py run    --name=rs350 --zone=us-central2-b \\
      --env=TFDS_DATA_DIR=gs://BUCKET/tfds \\
      -- --config=configs/rs350_i256.py --workdir=gs://BUCKET/rs350
  python launch/tpu.py watch  (create's and run's flags) -- ...   # recreates, reruns until done
  python launch/tpu.py status | logs | stop | free | delete --name=rs350 --zone=us-central2-b

Only gcloud and Python 3 are needed here (no jax). Each worker runs launch/worker.sh (through
`gcloud compute tpus tpu-vm ssh --worker=all`), which answers in `RS_<VERB> id=<worker>` lines.
Every gcloud command is printed before it runs (but the read-only ones watch repeats:
describe, and asking the workers for the run's state); --dry_run prints all and runs none.
docs/launch.md walks through a pod run.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = '~/rs/current/launch/worker.sh'

# The runtime versions for JAX per TPU generation (Cloud TPU's runtime table).
RUNTIMES = {
    'v2': ('tpu-ubuntu2204-base',),
    'v3': ('tpu-ubuntu2204-base',),
    'v4': ('tpu-ubuntu2204-base', 'v2-alpha-tpuv4'),
    'v5p': ('v2-alpha-tpuv5',),
    'v5litepod': ('v2-alpha-tpuv5-lite',),
    'v6e': ('v2-alpha-tpuv6e',),
}
# JAX 0.8.1+ puts the coordinator on port 8482, which the firewall rule GCP creates for TPUs
# does not open (it opens 8470-8476): the hosts then never meet. rs asks for 8476 instead
# (JAX_COORDINATOR_PORT) and checks that a rule opens it.
COORDINATOR_PORT = 8476
QUEUED_WAITING = ('ACCEPTED', 'WAITING_FOR_RESOURCES', 'PROVISIONING', 'CREATING')
QUEUED_FAILED = ('FAILED', 'SUSPENDED', 'SUSPENDING', 'DELETING')
LINE = re.compile(r'^(RS_[A-Z]+) (.*)$', re.MULTILINE)
FIELD = re.compile(r'(\w+)=(\S*)')


class LaunchError(Exception):
  """One line for the user, naming the fix."""


def accelerator_parts(accelerator: str) -> tuple[str, int]:
  match = re.fullmatch(r'(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)', accelerator or '')
  if not match:
    raise LaunchError(f'--accelerator={accelerator!r}: give a type like v4-32, v5p-64, '
                      f'v5litepod-16 or v6e-8 (generations: {", ".join(RUNTIMES)})')
  return match.group(1), int(match.group(2))


def runtime_for(accelerator: str, version: str | None) -> str:
  """The runtime version to create `accelerator` with: the table's, or a checked --version."""
  generation, _ = accelerator_parts(accelerator)
  known = RUNTIMES[generation]
  if version is None:
    return known[0]
  if version not in known:
    raise LaunchError(f'--version={version} is not a JAX runtime for {generation}: use '
                      f'{" or ".join(known)} (or leave --version out)')
  return version


def hosts_of(accelerator: str) -> int:
  """Hosts in a slice (used where gcloud cannot be asked: --dry_run). v2-v5p types count
  TensorCores, 8 per host; v5e and v6e types count chips, 4 per host beyond one 8-chip host."""
  generation, size = accelerator_parts(accelerator)
  if generation in ('v5litepod', 'v6e'):
    return 1 if size <= 8 else size // 4
  return max(1, size // 8)


def pinned_jax() -> str:
  """The jax version rs is tested with (requirements.txt), which every worker must run."""
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    match = re.search(r'^jax\[\w+\]==(\S+)', f.read(), re.MULTILINE)
  return match.group(1)


def worker_lines(output: str, verb: str) -> dict[int, dict[str, str]]:
  """The workers' `RS_<VERB> id=<i> key=value ...` lines, by worker id."""
  found = {}
  for name, fields in LINE.findall(output or ''):
    if name == f'RS_{verb.upper()}':
      head, has_last, last = fields.partition(' last=')  # the log's last line: all the rest
      values = dict(FIELD.findall(head), **({'last': last} if has_last else {}))
      if values.get('id', '').isdigit():
        found[int(values['id'])] = values
  return found


def ids_text(ids) -> str:
  return ','.join(map(str, sorted(ids)))


class Gcloud:
  """gcloud, printed before it runs; in a dry run only printed."""

  def __init__(self, binary: str, zone: str, project: str | None, dry_run: bool,
               internal_ip: bool = False):
    self.binary, self.zone, self.project = binary, zone, project
    self.dry_run, self.internal_ip = dry_run, internal_ip

  def __call__(self, *args: str, capture: bool = False, check: bool = True,
               location: bool = True, echo: bool = True) -> subprocess.CompletedProcess | None:
    command = [self.binary, *args]
    if location:
      command.append(f'--zone={self.zone}')
    if self.project:
      command.append(f'--project={self.project}')
    if echo or self.dry_run:
      print(f'$ {shlex.join(command)}', file=sys.stderr, flush=True)
    if self.dry_run:
      return None
    try:
      done = subprocess.run(command, capture_output=capture, text=True)
    except FileNotFoundError:
      raise LaunchError(f'{self.binary} not found: install the Google Cloud CLI '
                        '(https://cloud.google.com/sdk/docs/install) or pass --gcloud') from None
    if check and done.returncode != 0:
      raise LaunchError(f'{shlex.join(command[:5])} failed: {last_error(done.stderr)}')
    return done

  def tpu(self, *args: str, **kwargs):
    return self(*('compute', 'tpus', 'tpu-vm') + args, **kwargs)

  def queued(self, *args: str, **kwargs):
    return self(*('compute', 'tpus', 'queued-resources') + args, **kwargs)

  def scp(self, *args: str, **kwargs):
    return self.tpu('scp', *args, *(['--internal-ip'] if self.internal_ip else []), **kwargs)

  def describe(self, name: str, queued: bool = False) -> dict | None:
    """The node (or queued resource) as gcloud describes it; None when there is none."""
    run = self.queued if queued else self.tpu
    done = run('describe', name, '--format=json', capture=True, check=False, echo=False)
    if done is None:  # dry run: a READY node
      return {'state': 'READY' if not queued else 'ACTIVE', 'networkEndpoints': [{}],
              'networkConfig': {'network': 'default'}}
    if done.returncode != 0:
      if 'NOT_FOUND' in done.stderr or 'not found' in done.stderr.lower():
        return None
      raise LaunchError(f'gcloud could not describe {name}: {last_error(done.stderr)}')
    return json.loads(done.stdout)

  def ssh_all(self, name: str, command: str, check: bool = True, echo: bool = True) -> str:
    flags = ['--internal-ip'] if self.internal_ip else []
    done = self.tpu('ssh', name, '--worker=all', f'--command={command}', *flags, capture=True,
                    check=False, echo=echo)
    if done is None:
      return ''
    if echo:  # gcloud's own lines (connecting to each worker, warnings), briefly
      sys.stderr.write(''.join(f'  {line}\n' for line in done.stderr.splitlines()[-5:]))
    if check and done.returncode != 0 and not LINE.search(done.stdout):
      raise LaunchError(f'ssh to the workers of {name} failed: {last_error(done.stderr)}')
    return done.stdout


def last_error(stderr: str) -> str:
  lines = [line.strip() for line in (stderr or '').splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith('ERROR')]
  return (errors or lines or ['no message'])[-1][:300]


class Slice:
  """One TPU VM slice (a node, maybe from a queued resource) and the rs runs on it."""

  def __init__(self, args):
    self.args = args
    self.name = args.name
    self.gcloud = Gcloud(args.gcloud, args.zone, args.project, args.dry_run,
                         getattr(args, 'internal_ip', False))

  def say(self, message: str) -> None:
    print(f'launch/tpu.py: {message}', file=sys.stderr, flush=True)

  # --- the slice ---

  def create(self) -> None:
    a = self.args
    runtime = runtime_for(a.accelerator, a.version)
    spot = ['--spot'] if a.spot else []
    if a.queued:
      self.gcloud.queued('create', self.name, f'--node-id={self.name}',
                         f'--accelerator-type={a.accelerator}', f'--runtime-version={runtime}',
                         *spot)
      self.wait_for_queued()
    else:
      self.gcloud.tpu('create', self.name, f'--accelerator-type={a.accelerator}',
                      f'--version={runtime}', *spot)
    self.wait_until_ready()

  def wait_for_queued(self) -> None:
    """Until the queued resource is ACTIVE (its node exists), as long as --wait allows."""
    deadline = time.monotonic() + self.args.wait
    while True:
      queued = self.gcloud.describe(self.name, queued=True)
      state = queued_state(queued)
      if state == 'ACTIVE':
        return
      if queued is None or state in QUEUED_FAILED:
        raise LaunchError(f'the queued resource {self.name} is {state or "gone"}: see `gcloud '
                          f'compute tpus queued-resources describe {self.name} --zone='
                          f'{self.args.zone}`, then delete it and create again')
      if time.monotonic() > deadline:
        raise LaunchError(f'the queued resource {self.name} is still {state} after '
                          f'{self.args.wait:g} s: wait longer (--wait), or delete it')
      self.say(f'queued resource {self.name}: {state}')
      time.sleep(self.args.poll)

  def wait_until_ready(self) -> dict:
    deadline = time.monotonic() + self.args.wait
    while True:
      node = self.gcloud.describe(self.name)
      state = (node or {}).get('state')
      if state == 'READY':
        return node
      if state in ('PREEMPTED', 'TERMINATED') or time.monotonic() > deadline:
        raise LaunchError(f'{self.name} is {state or "missing"}, not READY: delete it and '
                          'create it again (or use watch, which does)')
      time.sleep(self.args.poll)

  def node(self) -> dict:
    node = self.gcloud.describe(self.name)
    if node is None:
      raise LaunchError(f'there is no TPU VM {self.name} in {self.args.zone}: create it first '
                        '(launch/tpu.py create), or check --name, --zone and --project')
    if node.get('state') != 'READY':
      raise LaunchError(f'{self.name} is {node.get("state")}, not READY: wait, or delete and '
                        'create it again (watch does both)')
    return node

  def workers(self, node: dict) -> int:
    return len(node.get('networkEndpoints') or [{}])

  def delete(self) -> None:
    """The node and its queued resource, then checks that nothing of the name is left."""
    if self.args.dry_run:  # either may exist
      self.gcloud.queued('delete', self.name, '--force', '--quiet')
      self.gcloud.tpu('delete', self.name, '--quiet')
      return
    if self.gcloud.describe(self.name, queued=True) is not None:
      self.gcloud.queued('delete', self.name, '--force', '--quiet')  # --force: its node too
    elif self.gcloud.describe(self.name) is not None:
      self.gcloud.tpu('delete', self.name, '--quiet')
    left = [kind for kind, queued in (('TPU VM', False), ('queued resource', True))
            if self.gcloud.describe(self.name, queued=queued) is not None]
    if left:
      raise LaunchError(f'{" and ".join(left)} {self.name} still exist after deleting: delete '
                        'them in the Cloud console, or run delete again')
    self.say(f'{self.name} deleted: nothing of it is left to bill')

  # --- rs on the workers ---

  def setup(self) -> None:
    """Sends the code at this commit to every worker and installs it with the pinned jax."""
    sha, archive = self.archive()
    self.gcloud.scp(archive, f'{self.name}:rs-{sha}.tar.gz', '--worker=all')
    jax_version = pinned_jax()
    command = (f'mkdir -p ~/rs/{sha} && tar -xzf ~/rs-{sha}.tar.gz -C ~/rs/{sha} '
               f'launch/worker.sh && bash ~/rs/{sha}/launch/worker.sh setup {sha} '
               f'{jax_version} {shlex.quote(self.args.python)}')
    output = self.gcloud.ssh_all(self.name, command)
    if self.args.dry_run:
      return
    node = self.node()
    done = worker_lines(output, 'setup')
    failed = {i: v['error'] for i, v in done.items() if 'error' in v}
    missing = set(range(self.workers(node))) - set(done)
    if failed or missing:
      what = '; '.join([f'worker {i}: {e} failed' for i, e in sorted(failed.items())] +
                       ([f'workers {ids_text(missing)} did not answer'] if missing else []))
      raise LaunchError(f'setup of {self.name} failed ({what}): run setup again (it repeats '
                        'only what is missing)')
    self.check_workers(node, want_sha=sha)
    self.say(f'{self.name}: {len(done)} workers run rs {sha[:12]} with jax {jax_version}')

  def archive(self) -> tuple[str, str]:
    """This checkout as the workers get it: its commit, or with uncommitted changes, the
    files as they are here (labelled <commit>-<hash of the files>), as a .tar.gz."""
    def git(*args):
      return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True)
    sha = git('rev-parse', 'HEAD').stdout.strip()
    if not sha:
      raise LaunchError(f'{ROOT} is not a git checkout: setup sends its files by git')
    files = sorted(set(git('ls-files', '--cached', '--others', '--exclude-standard', '-z')
                       .stdout.split('\0')) - {''})
    files = [f for f in files if os.path.isfile(os.path.join(ROOT, f))]
    if git('status', '--porcelain').stdout.strip():
      digest = hashlib.sha256()
      for f in files:
        with open(os.path.join(ROOT, f), 'rb') as data:
          digest.update(f.encode() + b'\0' + data.read())
      sha = f'{sha[:12]}-{digest.hexdigest()[:8]}'
      self.say(f'the checkout has uncommitted changes: the workers get its files as they are, '
               f'labelled {sha}')
    archive = os.path.join(tempfile.gettempdir(), f'rs-{sha}.tar.gz')
    if not self.args.dry_run and not os.path.exists(archive):
      fd, partial = tempfile.mkstemp(suffix='.partial', dir=os.path.dirname(archive))
      with os.fdopen(fd, 'wb') as out, tarfile.open(fileobj=out, mode='w:gz') as tar:
        for f in files:
          tar.add(os.path.join(ROOT, f), arcname=f)
      os.replace(partial, archive)  # whole or not there, whoever else builds it at once
    return sha, archive

  def check_workers(self, node: dict, want_sha: str | None = None) -> dict[int, dict]:
    """Every worker set up alike, with the pinned jax; nothing holding the TPU."""
    checks = worker_lines(self.gcloud.ssh_all(self.name, f'bash {WORKER} check', check=False),
                          'check')
    missing = set(range(self.workers(node))) - set(checks)
    if missing:
      raise LaunchError(f'workers {ids_text(missing)} of {self.name} did not answer (not set '
                        'up, or unreachable): run setup again')
    versions = {}
    for i, c in checks.items():
      key = tuple(f'{k} {c.get(k)}' for k in ('sha', 'python', 'jax', 'jaxlib', 'libtpu'))
      versions.setdefault(key, []).append(i)
    if len(versions) > 1:
      groups = '; '.join(f'workers {ids_text(ids)}: {", ".join(key)}'
                         for key, ids in versions.items())
      raise LaunchError(f'the workers of {self.name} differ ({groups}): every host must run '
                        'the same versions, run setup again')
    first = next(iter(checks.values()))
    if first.get('jax') != pinned_jax() or (want_sha and first.get('sha') != want_sha):
      raise LaunchError(f'the workers run rs {first.get("sha")} with jax {first.get("jax")}, '
                        f'not rs {(want_sha or "")[:12]} with jax {pinned_jax()} '
                        '(requirements.txt): run setup again')
    for i, c in sorted(checks.items()):
      if c.get('holders', 'none') != 'none':
        raise LaunchError(f'worker {i}: processes {c["holders"]} hold the TPU (left from an '
                          f'earlier run?): `launch/tpu.py stop` if it is an rs run, or '
                          f'`launch/tpu.py free` kills them and removes the TPU lock file')
    return checks

  def run(self) -> None:
    """Checks what goes wrong on pods, then starts the run on every worker at once."""
    a = self.args
    workdir = next((arg.split('=', 1)[1] for arg in a.rs_args
                    if arg.startswith('--workdir=')), None)
    if not any(arg.startswith('--config=') for arg in a.rs_args) or not workdir:
      raise LaunchError('give rs.main\'s flags after --, with --config= and --workdir=, e.g. '
                        '-- --config=configs/rs350_i256.py --workdir=gs://BUCKET/rs350')
    node = self.node()
    workers = self.workers(node)
    if workers > 1 and not workdir.startswith('gs://') and not a.shared_workdir:
      raise LaunchError(f'--workdir={workdir} is on one worker\'s disk, but {workers} workers '
                        'write one checkpoint together: give a gs:// workdir (or '
                        '--shared_workdir if it is a file system all workers share)')
    if workers > 1:
      self.check_firewall(node)
    checks = self.check_workers(node) if not a.dry_run else {}
    busy = {i: c['running'] for i, c in checks.items() if c.get('running', 'none') != 'none'}
    if busy:
      raise LaunchError(f'workers {ids_text(busy)} are still running {set(busy.values())}: '
                        '`launch/tpu.py stop` (it saves), or `status` to see how far it is')
    self.check_proxies(node, checks)
    env = [f'JAX_COORDINATOR_PORT={a.coordinator_port}', *a.env]
    command = (f'bash {WORKER} run {shlex.quote(a.run)} {shlex.join(env)} -- '
               f'{shlex.join(a.rs_args)}')
    started = worker_lines(self.gcloud.ssh_all(self.name, command, check=False), 'run')
    if a.dry_run:
      return
    ok = {i for i, v in started.items() if 'pid' in v}
    if ok != set(range(workers)):
      # A run on only some workers waits forever for the others (JAX's "TPU backend
      # initialization is taking more than 60 seconds"): take it down at once.
      self.gcloud.ssh_all(self.name, f'bash {WORKER} stop {shlex.quote(a.run)} 30', check=False)
      why = '; '.join(f'worker {i}: {started[i].get("error", "?")}' if i in started else
                      f'worker {i}: no answer' for i in sorted(set(range(workers)) - ok))
      raise LaunchError(f'the run started on workers {ids_text(ok) or "none"} of {workers} '
                        f'only ({why}); stopped it: run again')
    self.say(f'run {a.run} started on {workers} workers: `launch/tpu.py status` or `logs` '
             f'(--name={self.name} --zone={a.zone}) to follow it')

  def check_firewall(self, node: dict) -> None:
    """Some ingress rule on the node's network must open the coordinator's TCP port."""
    network = (node.get('networkConfig') or {}).get('network', 'default').rsplit('/', 1)[-1]
    done = self.gcloud('compute', 'firewall-rules', 'list', '--format=json', capture=True,
                       location=False)
    if done is None:
      return
    port = self.args.coordinator_port
    for rule in json.loads(done.stdout or '[]'):
      if (rule.get('network', '').rsplit('/', 1)[-1] != network or rule.get('disabled') or
          rule.get('direction', 'INGRESS') != 'INGRESS'):
        continue
      for allowed in rule.get('allowed', []):
        if allowed.get('IPProtocol') == 'all' or (
            allowed.get('IPProtocol') == 'tcp' and opens(allowed.get('ports'), port)):
          return
    raise LaunchError(f'no firewall rule on network {network} opens tcp:{port} (the JAX '
                      f'coordinator\'s port) between the workers: `gcloud compute firewall-rules '
                      f'create rs-jax-coordinator --network={network} --allow=tcp:{port} '
                      f'--source-ranges=10.0.0.0/8`, or pass --coordinator_port=<an open port>')

  def check_proxies(self, node: dict, checks: dict[int, dict]) -> None:
    """A proxy variable on a worker sends its coordinator connection to the proxy: the hosts
    never meet (JAX only warns)."""
    address = ((node.get('networkEndpoints') or [{}])[0]).get('ipAddress', '')
    for i, c in sorted(checks.items()):
      proxies = c.get('proxies', 'none')
      exempt = set(c.get('no_proxy', '').split(','))
      if proxies != 'none' and address not in exempt and '*' not in exempt:
        raise LaunchError(f'worker {i} has {proxies} set: its connection to the coordinator '
                          f'{address} would go through the proxy and the hosts never meet. '
                          f'Unset it there, or pass --env=no_proxy={address}')

  def status(self) -> None:
    """Prints the slice's state and each worker's run with its log's last line."""
    node = self.gcloud.describe(self.name)
    queued = self.gcloud.describe(self.name, queued=True)
    if self.args.dry_run:
      return
    state = (node or {}).get('state', 'absent')
    self.say(f'{self.name}: {state}' + (f', queued resource {queued_state(queued)}' if queued
                                         else ''))
    if state == 'READY':
      for i, r in enumerate(self.runs(node)):
        print(f'worker {i}: {r["state"]}{" (stopped)" if r.get("stopped") == "yes" else ""}'
              f'{": " + r["last"] if r.get("last") else ""}')

  def runs(self, node: dict) -> list[dict]:
    """Each worker's RS_STATUS fields for the run: state, stopped, last."""
    output = self.gcloud.ssh_all(self.name, f'bash {WORKER} status {shlex.quote(self.args.run)}',
                                 check=False, echo=False)
    runs = worker_lines(output, 'status')
    return [runs.get(i, {'state': 'no answer'}) for i in range(self.workers(node))]

  def stop(self) -> None:
    self.node()
    output = self.gcloud.ssh_all(self.name, f'bash {WORKER} stop {shlex.quote(self.args.run)} '
                                 f'{int(self.args.timeout)}', check=False)
    if self.args.dry_run:
      return
    states = {i: v['state'] for i, v in worker_lines(output, 'status').items()}
    self.say(f'run {self.args.run} on {self.name}: ' + '; '.join(
        f'worker {i} {s}' for i, s in sorted(states.items())))
    if any(s == 'running' for s in states.values()):
      raise LaunchError(f'workers {ids_text(i for i, s in states.items() if s == "running")} '
                        f'still run after {self.args.timeout:g} s: wait (--timeout) or `free`')

  def free(self) -> None:
    self.node()
    self.gcloud.ssh_all(self.name, f'bash {WORKER} free')

  def logs(self, into: str) -> list[str]:
    """Each worker's log of the run, copied into `into`; their last lines printed."""
    node = self.node()
    os.makedirs(into, exist_ok=True)
    paths = []
    for i in range(self.workers(node)):
      remote = f'{self.name}:rs/runs/{self.args.run}/worker-{i}.log'
      self.gcloud.scp(remote, into, f'--worker={i}', check=False)
      path = os.path.join(into, f'worker-{i}.log')
      if os.path.exists(path):
        paths.append(path)
        with open(path, errors='replace') as f:
          lines = f.read().strip().splitlines()
        print(f'worker {i}: {lines[-1] if lines else "(empty)"}')
    if not self.args.dry_run:
      self.say(f'{len(paths)} logs in {into}/')
    return paths

  def watch(self) -> None:
    """Runs until the run has finished: a preempted or lost slice is deleted and created
    again, set up and rerun, and rs resumes from the checkpoint in the gs:// workdir."""
    a = self.args
    attempts = 0
    started = False  # a run this watch started (a stopped one before it is resumed)
    seen = None
    while True:
      node = self.gcloud.describe(self.name)
      state = (node or {}).get('state')
      if a.dry_run or state in (None, 'PREEMPTED', 'TERMINATED'):
        if state:
          self.say(f'{self.name} is {state}: deleting it, then creating it again')
          self.delete()
        attempts += 1
        self.check_attempts(attempts)
        self.create()
        self.setup()
        self.run()
        started = True
        if a.dry_run:
          return
      elif state == 'READY':
        runs = self.runs(node)
        states = [r['state'] for r in runs]
        if states != seen:
          self.say(f'run {a.run} on {self.name}: {", ".join(states)}')
          seen = states
        if 'running' in states or 'no answer' in states:
          pass  # running, or going away: the next look at the slice tells
        elif not started and not all(s == 'exited-0' and r.get('stopped') == 'no'
                                     for s, r in zip(states, runs)):
          attempts += 1
          self.check_attempts(attempts)
          self.setup()
          self.run()
          started = True
        elif any(r.get('stopped') == 'yes' for r in runs):
          self.say(f'run {a.run} was stopped (launch/tpu.py stop): not watching it any more')
          return
        elif all(s == 'exited-0' for s in states):
          self.say(f'run {a.run} finished on {self.name}')
          self.logs(os.path.join(a.logs, self.name, a.run))
          if a.delete_when_done:
            self.delete()
          return
        else:
          self.logs(os.path.join(a.logs, self.name, a.run, f'attempt-{attempts}'))
          self.check_failure(runs)
          attempts += 1
          self.check_attempts(attempts)
          self.say(f'run {a.run} ended early ({", ".join(states)}): running it again')
          self.run()
      time.sleep(a.poll)

  def check_attempts(self, attempts: int) -> None:
    if attempts > self.args.max_attempts:
      raise LaunchError(f'run {self.args.run} was started {attempts - 1} times without '
                        'finishing: see the logs (launch/tpu.py logs), raise --max_attempts')

  def check_failure(self, runs: list[dict]) -> None:
    """A run that failed by itself (a bad flag, a missing dataset) would fail again: stop
    watching. Lost hosts, signals and preemption notices are rerun."""
    for i, r in enumerate(runs):
      code = r['state'].removeprefix('exited-')
      lost = 'another host of this run was lost' in r.get('last', '')
      if code.isdigit() and 0 < int(code) < 128 and not lost:
        raise LaunchError(f'run {self.args.run} failed on worker {i} (exit {code}): '
                          f'{r.get("last") or "see its log"}')


def queued_state(queued: dict | None) -> str | None:
  state = (queued or {}).get('state')
  return state.get('state') if isinstance(state, dict) else state


def opens(ports: list[str] | None, port: int) -> bool:
  if not ports:  # a tcp rule without ports opens them all
    return True
  for entry in ports:
    low, _, high = entry.partition('-')
    if int(low) <= port <= int(high or low):
      return True
  return False


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
  verbs = p.add_subparsers(dest='verb', required=True, metavar='VERB')

  def verb(name, help, *groups):
    v = verbs.add_parser(name, help=help)
    v.add_argument('--name', required=True, help='The TPU VM (and queued resource) name.')
    v.add_argument('--zone', default=os.environ.get('CLOUDSDK_COMPUTE_ZONE'),
                   help='Zone (default: $CLOUDSDK_COMPUTE_ZONE).')
    v.add_argument('--project', default=os.environ.get('CLOUDSDK_CORE_PROJECT'),
                   help='Project (default: $CLOUDSDK_CORE_PROJECT, else gcloud\'s).')
    v.add_argument('--gcloud', default='gcloud', help='The gcloud program.')
    v.add_argument('--dry_run', action='store_true', help='Print the commands, run none.')
    v.add_argument('--internal_ip', action='store_true',
                   help='ssh/scp over internal IPs (when this machine is a VM in the VPC).')
    v.add_argument('--poll', type=float, default=30, help='Seconds between state checks.')
    v.add_argument('--wait', type=float, default=3600,
                   help='Seconds to wait for a slice to become ready.')
    v.add_argument('--run', default='rs', help='The run\'s name on the workers.')
    for group in groups:
      group(v)
    return v

  def create_flags(v):
    v.add_argument('--accelerator', required=True, help='e.g. v4-32, v5p-64, v5litepod-16.')
    v.add_argument('--version', help='Runtime version (default: the table\'s for the type).')
    v.add_argument('--spot', action='store_true', help='Spot capacity (cheaper, preemptible).')
    v.add_argument('--queued', action='store_true',
                   help='Through a queued resource (waits for capacity instead of failing).')

  def setup_flags(v):
    v.add_argument('--python', default='venv', help='On the workers: `venv` installs jax[tpu] '
                   'and rs into ~/rs/venv; else an interpreter that has them.')

  def run_flags(v):
    v.add_argument('--env', action='append', default=[], metavar='KEY=VALUE',
                   help='Environment for rs on the workers, e.g. TFDS_DATA_DIR=gs://b/tfds.')
    v.add_argument('--coordinator_port', type=int, default=COORDINATOR_PORT,
                   help='The JAX coordinator\'s port; a firewall rule must open it.')
    v.add_argument('--shared_workdir', action='store_true',
                   help='Allow a workdir that is not gs:// (a file system all workers share).')
    v.add_argument('rs_args', nargs='*', metavar='-- RS_MAIN_FLAGS')

  verb('create', 'Create the slice (on demand, --spot, or --queued).', create_flags)
  verb('setup', 'Install rs at this commit and the pinned jax[tpu] on every worker.', setup_flags)
  verb('run', 'Start `python -m rs.main FLAGS` on every worker.', run_flags)
  verb('status', 'The slice\'s state and the run on each worker.')
  v = verb('logs', 'Copy the workers\' logs here.')
  v.add_argument('--logs', default='logs', help='Into LOGS/NAME/RUN/.')
  v = verb('stop', 'SIGTERM the run on every worker: rs saves and exits.')
  v.add_argument('--timeout', type=float, default=600, help='Seconds to wait for the exit.')
  verb('free', 'Kill whatever holds the TPU on every worker; remove its lock file.')
  verb('delete', 'Delete the slice and its queued resource.')
  v = verb('watch', 'Create, set up and run; recreate and rerun after preemptions, until done.',
           create_flags, setup_flags, run_flags)
  v.add_argument('--max_attempts', type=int, default=100, help='Starts before giving up.')
  v.add_argument('--delete_when_done', action='store_true', help='Delete the slice at the end.')
  v.add_argument('--logs', default='logs', help='Logs go to LOGS/NAME/RUN/.')
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  try:
    if not args.zone:
      raise LaunchError('no zone: pass --zone or set CLOUDSDK_COMPUTE_ZONE')
    if getattr(args, 'accelerator', None):
      runtime_for(args.accelerator, args.version)  # checked before anything is created
    bad_env = [e for e in getattr(args, 'env', []) if '=' not in e]
    if bad_env:
      raise LaunchError(f'--env={bad_env[0]}: give KEY=VALUE')
    tpu = Slice(args)
    if args.verb == 'logs':
      tpu.logs(os.path.join(args.logs, args.name, args.run))
    else:
      getattr(tpu, args.verb)()
  except LaunchError as e:
    print(f'launch/tpu.py: error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print('launch/tpu.py: interrupted; the slice and any run on it are as they were '
          '(status, stop, delete)', file=sys.stderr)
    return 130
  return 0


if __name__ == '__main__':
  sys.exit(main())
