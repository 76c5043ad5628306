"""The shell scripts: shellcheck-clean, and the GPU-cluster launchers (launch/slurm.sbatch,
launch/multinode.sh) hand rs what jax.distributed needs to join the hosts - tested by starting
2 real processes through them (a stand-in `srun` plays Slurm) that join one cluster."""
import glob
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, process_env

SCRIPTS = sorted([os.path.join(ROOT, 'setup.sh'), os.path.join(ROOT, '.ci', 'run'),
                  os.path.join(ROOT, 'launch', 'slurm.sbatch'),
                  *glob.glob(os.path.join(ROOT, 'launch', '*.sh')),
                  *glob.glob(os.path.join(ROOT, 'scripts', '*.sh'))])

# What a host of the cluster prints once jax.distributed has joined it (the stand-in for rs.main:
# the same start, rs.cli.start_jax, without the training).
PROBE = '''
import sys
sys.argv = sys.argv[2:] if sys.argv[1:2] == ['-m'] else sys.argv  # drop `-m rs.main`
import jax
from jax.experimental import multihost_utils
from rs import cli
cli.start_jax(distributed='--distributed' in sys.argv or None, init_timeout=60)
total = jax.numpy.sum(multihost_utils.process_allgather(
    jax.numpy.array([jax.process_index() + 1])))
print(f'host {jax.process_index()} of {jax.process_count()}: sum {int(total)}', flush=True)
'''

# A stand-in for Slurm's srun inside an sbatch job of SLURM_NTASKS tasks on this machine.
SRUN = '''#!/usr/bin/env python3
import os, subprocess, sys
args = sys.argv[1:]
flags = {}
while args[0].startswith('--'):
  name, _, value = args.pop(0).partition('=')
  flags[name] = value
assert set(flags) <= {'--kill-on-bad-exit', '--output'}, flags
job, tasks = os.environ['SLURM_JOB_ID'], int(os.environ['SLURM_NTASKS'])
procs = []
for task in range(tasks):
  env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
             SLURM_STEP_NODELIST='localhost', SLURM_STEP_NUM_NODES='1')
  out = open(flags['--output'].replace('%j', job).replace('%t', str(task)), 'w')
  procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT))
sys.exit(max(p.wait() for p in procs))
'''


def test_the_shell_scripts_pass_shellcheck():
  shellcheck = shutil.which('shellcheck')
  assert shellcheck, 'shellcheck is missing: `apt-get install shellcheck` (setup.sh test does)'
  done = subprocess.run([shellcheck, *SCRIPTS], capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-4000:]


@pytest.fixture
def probe(tmp_path):
  """A PYTHON for the launchers that runs PROBE instead of rs.main."""
  script = tmp_path / 'probe.py'
  script.write_text(PROBE)
  python = tmp_path / 'python'
  python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
  python.chmod(0o755)
  return str(python)


def test_slurm_tasks_join_one_cluster_through_the_batch_file(tmp_path, probe):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(SRUN.replace('python3', sys.executable, 1))
  (bin_dir / 'srun').chmod(0o755)
  job = str(random.randrange(1, 10**6))  # its port: JAX derives it from the job id
  env = process_env(devices=1, PATH=f'{bin_dir}:{os.environ["PATH"]}', PYTHON=probe,
                    SLURM_JOB_ID=job, SLURM_NTASKS='2', JAX_PLATFORMS='cpu')
  done = subprocess.run(['bash', os.path.join(ROOT, 'launch', 'slurm.sbatch'),
                         '--config=configs/tiny.py', '--workdir=/tmp/unused'], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=180)
  logs = [(tmp_path / 'logs' / f'rs-{job}-{t}.log').read_text() for t in (0, 1)]
  assert done.returncode == 0, logs
  for task, log in enumerate(logs):
    assert f'host {task} of 2: sum 3' in log, log[-2000:]


def test_machines_join_one_cluster_through_multinode_sh(tmp_path, probe):
  from test_multihost import free_port
  port = free_port()
  procs = [subprocess.Popen(['bash', os.path.join(ROOT, 'launch', 'multinode.sh'),
                             '--config=configs/tiny.py', '--workdir=/tmp/unused'],
                            cwd=ROOT, env=process_env(devices=1, PYTHON=probe,
                                                      COORDINATOR=f'localhost:{port}', NODES='2',
                                                      NODE_RANK=str(rank), JAX_PLATFORMS='cpu'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for rank in (0, 1)]
  outputs = [p.communicate(timeout=180)[0] for p in procs]
  for rank, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0 and f'host {rank} of 2: sum 3' in out, out[-2000:]


@pytest.mark.parametrize('script, env, message', [
    ('multinode.sh', {'NODES': '2', 'NODE_RANK': '0'},
     'launch/multinode.sh: error: COORDINATOR not set: give COORDINATOR=host:port of node 0, '
     'NODES=<machines> and NODE_RANK=<0..NODES-1> on every machine'),
    ('multinode.sh', {'COORDINATOR': 'localhost:1', 'NODES': '2', 'NODE_RANK': '0', 'ARGS': ''},
     "launch/multinode.sh: error: give rs.main's flags, e.g. --config=configs/rs350_i256.py "
     '--workdir=gs://BUCKET/rs350'),
    ('slurm.sbatch', {'ARGS': ''}, "launch/slurm.sbatch: error: give rs.main's flags"),
])
def test_the_launchers_bad_input_is_one_line(script, env, message):
  args = [] if 'ARGS' in env else ['--config=configs/tiny.py']
  done = subprocess.run(['bash', os.path.join(ROOT, 'launch', script), *args], cwd=ROOT,
                        env=process_env(**{k: v for k, v in env.items() if k != 'ARGS'}),
                        capture_output=True, text=True)
  assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr
