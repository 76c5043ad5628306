"""launch/local.py: several rs processes on this machine as the hosts of a pod, and how a
multi-host run starts, stops and fails (rs.distributed): SIGTERM stops every host at one step,
a killed host stops the others within the peer timeout, a host that never comes is one line,
and the run resumed after all of it ends where an uninterrupted one does."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, process_env
from rs import checkpoint, distributed, sharding, train

LAUNCHER = os.path.join(ROOT, 'launch', 'local.py')
_spec = importlib.util.spec_from_file_location('launch_local', LAUNCHER)
launch_local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch_local)
STEPS = 16
OVERRIDES = (f'--config.train_steps={STEPS}', '--config.checkpoint_every_steps=4',
             '--config.eval_every_steps=16', '--config.log_every_steps=1')
TRAIN_LINE = re.compile(r'\[train +(\d+)/')


def test_the_environment_names_the_cluster_or_gets_one_line():
  env = {distributed.ADDRESS: 'localhost:1234', distributed.NUM_PROCESSES: '4',
         distributed.PROCESS_ID: '3'}
  assert distributed.Cluster.from_environment(env) == distributed.Cluster('localhost:1234', 4, 3)
  assert not distributed.Cluster.from_environment({}).explicit  # JAX's own detection
  for change, fragment in [({distributed.PROCESS_ID: None}, 'JAX_PROCESS_ID not set'),
                           ({distributed.PROCESS_ID: '4'}, 'give an id from 0 to 3'),
                           ({distributed.NUM_PROCESSES: 'two'}, 'give whole numbers'),
                           ({distributed.ADDRESS: 'localhost'}, 'give host:port')]:
    broken = {k: v for k, v in (env | change).items() if v is not None}
    with pytest.raises(distributed.ClusterError, match=fragment):
      distributed.Cluster.from_environment(broken)


def test_a_proxy_that_would_take_the_coordinators_traffic_is_refused():
  distributed.check_proxies('10.0.0.2:8476', {})
  with pytest.raises(distributed.ClusterError, match='http_proxy set: .* 10.0.0.2 would go '
                     'through the proxy'):
    distributed.check_proxies('10.0.0.2:8476', {'http_proxy': 'http://proxy:3128'})
  distributed.check_proxies('10.0.0.2:8476', {'HTTPS_PROXY': 'http://proxy:3128',
                                              'no_proxy': 'localhost,10.0.0.2'})


def test_a_host_that_never_comes_ends_the_others_in_one_line(tmp_path):
  """Process 0 of 2 waits for process 1, which never starts: one line after --init_timeout
  (JAX alone would wait 5 minutes, then abort), nothing written."""
  from test_multihost import free_port
  env = process_env(JAX_COORDINATOR_ADDRESS=f'localhost:{free_port()}', JAX_NUM_PROCESSES='2',
                    JAX_PROCESS_ID='0')
  start = time.monotonic()
  run = subprocess.run([sys.executable, '-m', 'rs.main', '--config=configs/tiny.py',
                        f'--workdir={tmp_path / "run"}', '--init_timeout=3'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 1 and time.monotonic() - start < 60
  assert run.stderr.strip().splitlines()[-1].startswith(
      'error: the other hosts did not all join the coordinator at localhost:')
  assert 'within 3 s (--init_timeout)' in run.stderr and not (tmp_path / 'run').exists()


class Launch:
  """launch/local.py running configs/tiny.py on `processes` processes of `devices` CPU devices."""

  def __init__(self, workdir, logs, processes=2, devices=2, overrides=OVERRIDES):
    self.logs = str(logs)
    env = process_env()  # the launcher gives each process its devices and its own cache
    self.proc = subprocess.Popen(
        [sys.executable, LAUNCHER, f'--processes={processes}', f'--devices={devices}',
         f'--logs={logs}', '--quiet', '--grace=60', '--', sys.executable, '-m', 'rs.main',
         '--config=configs/tiny.py', f'--workdir={workdir}', '--peer_timeout=10', *overrides],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)

  def log(self, i: int) -> str:
    path = os.path.join(self.logs, f'process-{i}.log')
    return open(path).read() if os.path.exists(path) else ''

  def wait_for_step(self, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(int(s) >= step for s in TRAIN_LINE.findall(self.log(0))):
      assert self.proc.poll() is None, self.log(0)[-3000:]
      assert time.monotonic() < deadline, self.log(0)[-3000:]
      time.sleep(0.2)

  def pid_of(self, process_id: int) -> int:
    """The launcher's child started with JAX_PROCESS_ID=process_id."""
    pids = launch_local.process_pids(self.proc.pid)
    assert process_id in pids, f'no process {process_id} under the launcher'
    return pids[process_id]

  def finish(self, timeout: float = 400) -> tuple[int, str]:
    _, err = self.proc.communicate(timeout=timeout)
    return self.proc.returncode, err


def test_four_hosts_resume_one_process_and_one_process_reads_four(tmp_path):
  """A checkpoint written by 1 process restores on 4 (resuming its run), and the one the 4
  write restores in 1; the 4 hosts evaluate every example once; the run ends where the one
  process, uninterrupted, ends (within float32 rounding: 4 hosts add gradients in another
  order)."""
  import shutil
  from conftest import tiny_config
  overrides = dict(train_steps=6, checkpoint_every_steps=3, eval_every_steps=6)
  one = str(tmp_path / 'one')
  train.train_and_evaluate(tiny_config(**overrides), one,
                           mesh=sharding.create_mesh(jax.devices()[:4]))
  workdir = str(tmp_path / 'four')
  shutil.copytree(one, workdir)
  shutil.rmtree(f'{workdir}/checkpoints/6')  # as if the one process had stopped at step 3
  launch = Launch(workdir, tmp_path / 'logs', processes=4, devices=1,
                  overrides=[f'--config.{k}={v}' for k, v in overrides.items()])
  status, err = launch.finish()
  assert status == 0 and 'processes 0,1,2,3 exited 0' in err, err + launch.log(0)[-3000:]
  assert '4 devices, 4 hosts' in launch.log(0)
  assert 'Resumed from the checkpoint at step 3' in launch.log(0)
  with open(f'{workdir}/eval.json') as f:
    evaluation = [e for e in json.load(f) if e['step'] == 6][-1]
  assert evaluation['num_examples'] == 500  # test[:500]: each example once across 4 hosts
  four_state, one_state = final_state(workdir), final_state(one)
  assert int(four_state['step']) == 6
  for x, y in zip(*map(jax.tree.leaves, (four_state, one_state))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # 2 hosts ~90-140 s, 4 hosts ~4-6 min of 2-core CPU: scripts/soak.sh runs it
@pytest.mark.parametrize('processes, devices', [(2, 2), (4, 1)])
def test_stopped_killed_and_resumed_hosts_end_as_one_process(tmp_path, processes, devices):
  workdir = str(tmp_path / 'run')
  hosts = range(processes)
  ids = ','.join(map(str, hosts))

  def launch_(logs):
    return Launch(workdir if logs != 'logs4' else str(tmp_path / 'uninterrupted'),
                  tmp_path / logs, processes, devices)
  # SIGTERM (a preemption notice) to the launcher reaches all: one agreed step, one save, 0.
  launch = launch_('logs1')
  launch.wait_for_step(3)
  launch.proc.send_signal(signal.SIGTERM)
  status, err = launch.finish()
  assert status == 0 and f'processes {ids} exited 0' in err, err
  stopped = {int(re.search(r'Stopped at step (\d+)', launch.log(i)).group(1)) for i in hosts}
  assert len(stopped) == 1  # every host stopped at the same step
  step = stopped.pop()
  assert 3 <= step < STEPS
  assert max(int(d) for d in os.listdir(f'{workdir}/checkpoints') if d.isdigit()) == step

  # kill -9 of process 1 mid-run: the others stop too, within the peer timeout (10 s) and the
  # launcher's grace, instead of hanging in their next collective.
  launch = launch_('logs2')
  launch.wait_for_step(step + 2)
  os.kill(launch.pid_of(1), signal.SIGKILL)
  killed = time.monotonic()
  status, err = launch.finish()
  assert status != 0 and time.monotonic() - killed < 60, err
  summary = err.strip().splitlines()[-1]
  assert 'process 1 killed by SIGKILL' in summary, err
  for i in set(hosts) - {1}:
    assert re.search(rf'process(es [\d,]*\b{i}\b[\d,]*| {i}) (exited 1|stopped after losing a '
                     'peer)', summary), summary
    if launch.log(i).strip().splitlines()[-1].startswith('error:'):  # the loss reached Python
      assert launch.log(i).strip().splitlines()[-1].startswith(
          'error: another host of this run was lost')

  # Relaunched, the run resumes from its last complete checkpoint and ends bit for bit where
  # the same launch run without interruption ends, and within float32 rounding where one
  # process with the same 4 devices and global batch ends (its all-reduces add the devices'
  # gradients in another order than gloo's across processes: ~2e-7 apart after a step, ~3e-6
  # after 16).
  launch = launch_('logs3')
  status, err = launch.finish()
  assert status == 0, launch.log(0)[-3000:]
  assert 'Resumed from the checkpoint at step' in launch.log(0)
  uninterrupted = str(tmp_path / 'uninterrupted')
  assert launch_('logs4').finish()[0] == 0
  from conftest import tiny_config
  one = str(tmp_path / 'one')
  config = tiny_config(train_steps=STEPS, checkpoint_every_steps=4, eval_every_steps=16)
  train.train_and_evaluate(config, one, mesh=sharding.create_mesh(jax.devices()[:4]))
  resumed, reference, one_process = map(final_state, (workdir, uninterrupted, one))
  assert int(resumed['step']) == STEPS
  for x, y, z in zip(*map(jax.tree.leaves, (resumed, reference, one_process))):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-5)


def final_state(workdir: str):
  """The newest checkpoint's state, on one device (written by 1 process or 2)."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 1)
  state = jax.device_get(ckpt.restore())
  ckpt.close()
  return state
