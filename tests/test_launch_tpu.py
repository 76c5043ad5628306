"""launch/tpu.py against a fake gcloud (tests/fake_gcloud.py) whose TPU VM workers are local
processes: a real 2-worker rs run is created, set up, started, stopped, preempted and carried
to its end by watch, and ends bit for bit as an uninterrupted run of the same hosts; what goes
wrong on pods is refused in one line before anything starts."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import fake_gcloud
from conftest import ROOT, process_env

spec = importlib.util.spec_from_file_location('launch_tpu', os.path.join(ROOT, 'launch', 'tpu.py'))
tpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tpu)

ZONE = 'us-central2-b'
STEPS = 30  # enough that stop and the preemption land mid-run
RS_ARGS = ('--config=configs/tiny.py', f'--config.train_steps={STEPS}',
           '--config.checkpoint_every_steps=2', f'--config.eval_every_steps={STEPS}',
           '--config.log_every_steps=1', '--peer_timeout=10')
TRAIN_LINE = re.compile(r'\[train +(\d+)/')


class Cloud:
  """The fake gcloud's state directory, and launch/tpu.py run against it."""

  def __init__(self, directory, **knobs):
    self.dir = str(directory)
    self.env = process_env(PATH=f'{fake_gcloud.install(self.dir)}:{os.environ["PATH"]}',
                           **knobs)

  def command(self, verb, *flags, rs_args=(), name='pod'):
    return [sys.executable, os.path.join(ROOT, 'launch', 'tpu.py'), verb, f'--name={name}',
            f'--zone={ZONE}', '--poll=0.2', *flags, *(('--', *rs_args) if rs_args else ())]

  def __call__(self, verb, *flags, rs_args=(), name='pod', env=None, ok=True):
    done = subprocess.run(self.command(verb, *flags, rs_args=rs_args, name=name), cwd=ROOT,
                          env=self.env | (env or {}), capture_output=True, text=True,
                          timeout=600)
    if ok:
      assert done.returncode == 0, done.stderr[-3000:]
    return done

  def node(self, name='pod') -> dict:
    with open(os.path.join(self.dir, 'state.json')) as f:
      return json.load(f)['nodes'][name]

  def home(self, worker: int, name='pod') -> str:
    return fake_gcloud.worker_home(self.node(name), worker)

  def log(self, worker: int, name='pod', run='rs') -> str:
    path = os.path.join(self.home(worker, name), 'rs', 'runs', run, f'worker-{worker}.log')
    return open(path).read() if os.path.exists(path) else ''

  def wait_for_step(self, step: int, proc=None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(int(s) >= step for s in TRAIN_LINE.findall(self.log(0))):
      assert proc is None or proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.monotonic() < deadline, self.log(0)[-3000:]
      time.sleep(0.2)

  def calls(self) -> list[list[str]]:
    return fake_gcloud.calls(self.dir)


def last_line(done) -> str:
  return done.stderr.strip().splitlines()[-1]


# --- without gcloud: the commands it would run, and bad values -----------------------------

def dry_run(capsys, *argv) -> list[str]:
  assert tpu.main([*argv[:1], '--name=pod', f'--zone={ZONE}', '--dry_run', *argv[1:]]) == 0
  return [line[2:] for line in capsys.readouterr().err.splitlines() if line.startswith('$ ')]


def test_a_dry_run_prints_the_documented_gcloud_commands(capsys):
  assert dry_run(capsys, 'create', '--accelerator=v5litepod-16', '--spot') == [
      f'gcloud compute tpus tpu-vm create pod --accelerator-type=v5litepod-16 '
      f'--version=v2-alpha-tpuv5-lite --spot --zone={ZONE}',
      f'gcloud compute tpus tpu-vm describe pod --format=json --zone={ZONE}']
  queued = dry_run(capsys, 'create', '--accelerator=v4-32', '--queued', '--project=proj')
  assert queued[0] == ('gcloud compute tpus queued-resources create pod --node-id=pod '
                       '--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base '
                       f'--zone={ZONE} --project=proj')
  run = dry_run(capsys, 'run', '--env=TFDS_DATA_DIR=gs://b/tfds', '--',
                '--config=configs/rs350_i256.py', '--workdir=gs://b/rs350')
  assert run[-1] == (
      "gcloud compute tpus tpu-vm ssh pod --worker=all '--command=bash "
      "~/rs/current/launch/worker.sh run rs JAX_COORDINATOR_PORT=8476 TFDS_DATA_DIR=gs://b/tfds "
      f"-- --config=configs/rs350_i256.py --workdir=gs://b/rs350' --zone={ZONE}")
  assert dry_run(capsys, 'delete') == [
      f'gcloud compute tpus queued-resources delete pod --force --quiet --zone={ZONE}',
      f'gcloud compute tpus tpu-vm delete pod --quiet --zone={ZONE}']
  watch = dry_run(capsys, 'watch', '--accelerator=v6e-8', '--queued', '--spot', '--',
                  '--config=configs/rs350_i256.py', '--workdir=gs://b/rs350')
  verbs = [' '.join(c.split()[3:5]) for c in watch]
  assert verbs[:3] == ['tpu-vm describe', 'queued-resources delete', 'tpu-vm delete']
  assert 'queued-resources create' in verbs and 'tpu-vm scp' in verbs
  assert sum(v == 'tpu-vm ssh' for v in verbs) == 2  # setup, run


def test_the_runtime_table_and_the_hosts_of_a_slice():
  assert tpu.runtime_for('v6e-256', None) == 'v2-alpha-tpuv6e'
  assert tpu.runtime_for('v5p-128', None) == 'v2-alpha-tpuv5'
  assert tpu.runtime_for('v4-8', 'v2-alpha-tpuv4') == 'v2-alpha-tpuv4'
  assert tpu.runtime_for('v3-32', None) == 'tpu-ubuntu2204-base'
  # v4-32: 32 TensorCores, 16 chips, 4 hosts; v5e types count chips, 4 per host past 8.
  assert [tpu.hosts_of(a) for a in ('v4-8', 'v4-32', 'v5litepod-8', 'v5litepod-64')] == [1, 4, 1,
                                                                                            16]
  assert tpu.opens(['8470-8476', '11211'], 8476) and not tpu.opens(['8470-8475'], 8476)
  assert tpu.opens(None, 8476)


@pytest.mark.parametrize('argv, message', [
    (['create', '--accelerator=v4_32'], "--accelerator='v4_32': give a type like v4-32"),
    (['create', '--accelerator=v4-32', '--version=v2-alpha-tpuv6e'],
     '--version=v2-alpha-tpuv6e is not a JAX runtime for v4: use tpu-ubuntu2204-base or '
     'v2-alpha-tpuv4'),
    (['run', '--env=TFDS_DATA_DIR', '--', '--config=c.py', '--workdir=gs://b/w'],
     '--env=TFDS_DATA_DIR: give KEY=VALUE'),
    (['run', '--', '--workdir=gs://b/w'], "give rs.main's flags after --, with --config="),
    (['status', '--gcloud=/nonexistent/gcloud'],
     '/nonexistent/gcloud not found: install the Google Cloud CLI'),
])
def test_bad_values_get_one_line_before_anything_runs(capsys, argv, message):
  assert tpu.main([argv[0], '--name=pod', f'--zone={ZONE}', *argv[1:]]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith(f'launch/tpu.py: error: {message}'), err


def test_no_zone_is_one_line(capsys, monkeypatch):
  monkeypatch.delenv('CLOUDSDK_COMPUTE_ZONE', raising=False)
  assert tpu.main(['status', '--name=pod']) == 1
  assert capsys.readouterr().err.strip() == ('launch/tpu.py: error: no zone: pass --zone or set '
                                             'CLOUDSDK_COMPUTE_ZONE')


# --- the pitfalls of pods, through the fake ------------------------------------------------

@pytest.fixture(scope='module')
def pod(tmp_path_factory):
  """A 2-worker slice, set up with this interpreter (the workers cannot pip install here)."""
  cloud = Cloud(tmp_path_factory.mktemp('cloud'))
  cloud('create', '--accelerator=v4-16')
  cloud('setup', f'--python={sys.executable}')
  return cloud


def refused(cloud, *flags, env=None, workdir='gs://b/w', name='pod'):
  """The last line of a `run` that must stop before starting anything."""
  before = len(cloud.calls())
  done = cloud('run', *flags, rs_args=('--config=configs/tiny.py', f'--workdir={workdir}'),
               env=env, name=name, ok=False)
  assert done.returncode == 1, done.stderr[-2000:]
  assert not any('worker.sh run' in ' '.join(c) for c in cloud.calls()[before:]), 'it started'
  return last_line(done)


def test_setup_installs_one_version_everywhere_and_says_which(pod):
  setup = [c for c in pod.calls() if c[3:4] == ['ssh'] and 'setup' in c[6]]
  assert len(setup) == 1 and setup[0][5] == '--worker=all'
  assert f'setup {tpu.pinned_jax()}' not in setup[0][6]  # the sha comes between
  assert re.search(rf' {re.escape(tpu.pinned_jax())} {re.escape(sys.executable)}$', setup[0][6])
  for i in range(2):
    assert os.path.exists(os.path.join(pod.home(i), 'rs', 'current', 'rs', 'train.py'))


def test_a_closed_coordinator_port_is_refused(pod):
  assert refused(pod, env={'FAKE_GCLOUD_FIREWALL': '[]'}) == (
      'launch/tpu.py: error: no firewall rule on network default opens tcp:8476 (the JAX '
      "coordinator's port) between the workers: `gcloud compute firewall-rules create "
      'rs-jax-coordinator --network=default --allow=tcp:8476 --source-ranges=10.0.0.0/8`, or '
      'pass --coordinator_port=<an open port>')
  # The rule GCP makes for TPUs opens 8470-8476, not JAX's default 8482.
  assert 'opens tcp:8482' in refused(pod, '--coordinator_port=8482')


def test_workers_with_different_versions_are_refused(pod, tmp_path):
  liar = tmp_path / 'python'  # worker 1 got another jax (an upgrade on one host)
  liar.write_text('#!/bin/sh\necho python=3.11.2 jax=0.10.1 jaxlib=0.10.1 libtpu=none\n')
  liar.chmod(0o755)
  recorded = os.path.join(pod.home(1), 'rs', 'python')
  with open(recorded) as f:
    python = f.read()
  with open(recorded, 'w') as f:
    f.write(str(liar))
  try:
    line = refused(pod)
  finally:
    with open(recorded, 'w') as f:
      f.write(python)
  assert line.startswith('launch/tpu.py: error: the workers of pod differ (workers 0: ')
  assert 'workers 1: ' in line and 'jax 0.10.1' in line and line.endswith('run setup again')


def test_a_process_holding_the_tpu_is_refused_and_free_kills_it(pod):
  device = os.path.join(pod.home(1), 'accel0')
  open(device, 'w').close()
  open(os.path.join(pod.home(1), 'libtpu_lockfile'), 'w').close()
  holder = subprocess.Popen(['sleep', '300'], stdin=open(device))
  try:
    assert refused(pod) == (
        f'launch/tpu.py: error: worker 1: processes {holder.pid} hold the TPU (left from an '
        'earlier run?): `launch/tpu.py stop` if it is an rs run, or `launch/tpu.py free` kills '
        'them and removes the TPU lock file')
    pod('free')
    assert holder.wait(timeout=10) == -9
    assert not os.path.exists(os.path.join(pod.home(1), 'libtpu_lockfile'))
  finally:
    holder.kill()
    os.remove(device)


def test_a_proxy_between_the_hosts_is_refused(pod):
  assert refused(pod, env={'https_proxy': 'http://proxy:3128'}) == (
      'launch/tpu.py: error: worker 0 has https_proxy set: its connection to the coordinator '
      '127.0.0.1 would go through the proxy and the hosts never meet. Unset it there, or pass '
      '--env=no_proxy=127.0.0.1')


def test_a_workdir_on_one_workers_disk_is_refused(pod):
  assert refused(pod, workdir='/tmp/run').startswith(
      "launch/tpu.py: error: --workdir=/tmp/run is on one worker's disk, but 2 workers write "
      'one checkpoint together: give a gs:// workdir')


def test_a_run_that_starts_on_some_workers_only_is_taken_down(pod, tmp_path):
  done = pod('run', '--shared_workdir', rs_args=('--config=configs/tiny.py',
                                                 f'--workdir={tmp_path / "run"}'),
             env={'FAKE_GCLOUD_DROP': '1:worker.sh run'}, ok=False)
  assert last_line(done) == ('launch/tpu.py: error: the run started on workers 0 of 2 only '
                             '(worker 1: no answer); stopped it: run again'), done.stderr
  status = pod('status')
  assert 'worker 0: running' not in status.stdout and 'worker 1: absent' in status.stdout


def test_a_slice_that_is_not_set_up_or_not_there_is_one_line(pod):
  pod('create', '--accelerator=v4-16', name='bare')
  assert refused(pod, name='bare') == (
      'launch/tpu.py: error: workers 0,1 of bare did not answer (not set up, or unreachable): '
      'run setup again')
  pod('delete', name='bare')
  assert last_line(pod('status', name='bare')) == 'launch/tpu.py: bare: absent'
  assert last_line(pod('stop', name='gone', ok=False)) == (
      f'launch/tpu.py: error: there is no TPU VM gone in {ZONE}: create it first (launch/tpu.py '
      'create), or check --name, --zone and --project')


# --- a real run, end to end --------------------------------------------------------------

def test_a_pod_run_stopped_preempted_and_watched_ends_as_an_uninterrupted_one(tmp_path):
  """create (queued, spot) -> setup -> run -> stop -> watch, which resumes it; a preemption
  (the slice reads PREEMPTED, its workers die); watch deletes the slice, creates it again,
  sets it up and reruns; the run resumes from its checkpoint and finishes; watch collects the
  logs and deletes the slice. The end equals an uninterrupted run on the same hosts."""
  cloud = Cloud(tmp_path / 'cloud')
  workdir = str(tmp_path / 'run')  # stands for gs://: every worker sees it
  rs_args = (*RS_ARGS, f'--workdir={workdir}')
  create = ('--accelerator=v4-16', '--queued', '--spot')
  setup = (f'--python={sys.executable}',)
  cloud('create', *create)
  cloud('setup', *setup)
  cloud('run', '--shared_workdir', rs_args=rs_args)
  cloud.wait_for_step(2)
  cloud('stop')  # SIGTERM on every worker: one agreed step, one save, exit 0
  stopped = {int(re.search(r'Stopped at step (\d+)', cloud.log(i)).group(1)) for i in (0, 1)}
  assert len(stopped) == 1, [cloud.log(i)[-2000:] for i in (0, 1)]
  step = stopped.pop()
  assert step <= STEPS - 10, step
  assert 'worker 0: exited-0 (stopped): ' in cloud('status').stdout

  watch = subprocess.Popen(cloud.command('watch', *create, *setup, '--shared_workdir',
                                         '--delete_when_done', f'--logs={tmp_path / "logs"}',
                                         rs_args=rs_args),
                           cwd=ROOT, env=cloud.env, stderr=subprocess.PIPE, text=True)
  cloud.wait_for_step(step + 2, watch)
  assert 'Resumed from the checkpoint at step' in cloud.log(0)
  fake_gcloud.preempt(cloud.dir, 'pod')
  _, err = watch.communicate(timeout=600)
  assert watch.returncode == 0, err[-3000:]
  assert 'launch/tpu.py: pod is PREEMPTED: deleting it, then creating it again' in err
  assert 'launch/tpu.py: run rs finished on pod' in err
  assert err.strip().endswith('launch/tpu.py: pod deleted: nothing of it is left to bill')
  logs = tmp_path / 'logs' / 'pod' / 'rs'
  final = [(logs / f'worker-{i}.log').read_text() for i in (0, 1)]
  for log in final:
    assert 'Resumed from the checkpoint at step' in log and f'Finished {STEPS} steps' in log
  with open(os.path.join(cloud.dir, 'state.json')) as f:
    assert json.load(f) | {'incarnations': None} == {'nodes': {}, 'queued': {},
                                                     'incarnations': None}

  # Every call had the documented shape (the fake refuses others); ssh went to all workers.
  calls = cloud.calls()
  assert all(f'--zone={ZONE}' in c for c in calls if c[1] == 'tpus')
  assert all('--worker=all' in c for c in calls if c[3:4] == ['ssh'])
  creates = [c for c in calls if c[2:4] == ['queued-resources', 'create']]
  assert len(creates) == 2 and all('--spot' in c and '--node-id=pod' in c for c in creates)
  assert sum(c[2:4] == ['queued-resources', 'delete'] and '--force' in c for c in calls) == 2

  # The same 2 hosts of 1 device, uninterrupted (launch/local.py): bit for bit. (One process
  # with both devices ends within float32 rounding of it, not bit for bit: the stem's weight
  # gradients differ in their last bits from the first step on (<= 1.2e-8), whatever the
  # threads; tests/test_multihost.py compares hosts with one process.)
  reference = str(tmp_path / 'reference')
  local = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', 'local.py'),
                          '--processes=2', '--devices=1', f'--logs={tmp_path / "local"}',
                          '--quiet', '--', sys.executable, '-m', 'rs.main', *RS_ARGS,
                          f'--workdir={reference}'], cwd=ROOT, env=process_env(),
                         capture_output=True, text=True, timeout=600)
  assert local.returncode == 0, local.stderr[-3000:]
  from test_launch_local import final_state
  pod_state, reference_state = final_state(workdir), final_state(reference)
  assert int(pod_state['step']) == STEPS
  for x, y in zip(*map(jax.tree.leaves, (pod_state, reference_state))):
    np.testing.assert_array_equal(x, y)
