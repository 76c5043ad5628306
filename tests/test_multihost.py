"""Two real processes (hosts) of 2 CPU devices each, through jax.distributed, as on a TPU pod.

Each host reads only its own share of the data and feeds its rows of every global batch; the
run must equal a single process with the same 4 devices, and evaluation must count every
example once across hosts.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import process_env
from rs import sharding, train

pytest.importorskip('skimage.data')
from rs.tools import photo_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_hosts(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('photos'))
  from test_sources_e2e import TRAIN, VALIDATION
  photo_dataset.write_folder(root, 'train', TRAIN)
  photo_dataset.write_folder(root, 'validation', VALIDATION)
  workdir = str(tmp_path_factory.mktemp('hosts'))
  port = str(free_port())
  # Each host compiles for itself: a compilation cache shared with the other host (the test
  # run's, tests/conftest.py) hands it programs built for the other's devices, and both hang.
  env = process_env(devices=2, drop=('JAX_COMPILATION_CACHE_DIR',))
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(i),
                             '2', port, workdir, root], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  results = [json.loads(line.split(' ', 1)[1]) for out in outputs
             for line in out.splitlines() if line.startswith('RESULT ')]
  return workdir, root, results


def test_two_hosts_train_like_one_process_with_the_same_devices(two_hosts, tmp_path, tiny):
  _, _, results = two_hosts
  fashion = [r for r in results if r['run'] == 'fashion']
  assert sorted(r['process'] for r in fashion) == [0, 1] and fashion[0]['devices'] == 4
  one = train.train_and_evaluate(tiny(), str(tmp_path),
                                 mesh=sharding.create_mesh(jax.devices()[:4]))
  for r in fashion:
    assert r['num_examples'] == 500  # every example once across the two hosts
    for key in ('loss', 'ema_loss', 'top1', 'ema_top1'):
      np.testing.assert_allclose(r[key], one[key], rtol=1e-4, err_msg=key)


def test_two_hosts_stream_their_own_shares_of_a_folder_dataset(two_hosts):
  from test_sources_e2e import VALIDATION
  folder = [r for r in two_hosts[2] if r['run'] == 'folder']
  assert len(folder) == 2
  assert folder[0] == folder[1] | {'process': folder[0]['process']}  # one global result
  assert folder[0]['num_examples'] == len(VALIDATION) and np.isfinite(folder[0]['loss'])
