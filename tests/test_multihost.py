"""Two real processes (hosts) of 2 CPU devices each, through jax.distributed, as on a TPU pod.

Each host reads only its own share of the data and feeds its rows of every global batch; the
run must equal a single process with the same 4 devices, and evaluation must count every
example once across hosts. The same holds for semi-supervised work: each host pseudo-labels its
own shards, and students train on labeled + pseudo-labeled rows in both pipelines.
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
SPLIT = 'test[:200]'  # the unlabeled Fashion-MNIST images the hosts label (multihost_worker.py)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_hosts(tmp_path_factory):
  """Both hosts' RESULT lines and outputs, after they ran the worker's runs (its docstring)."""
  from test_pseudo_label import save_random_teacher
  from test_sources_e2e import TRAIN, VALIDATION, rs_config
  from configs import tiny
  root = tmp_path_factory.mktemp('data')
  photo_dataset.write_folder(str(root / 'photos'), 'train', TRAIN)
  photo_dataset.write_folder(str(root / 'photos'), 'validation', VALIDATION)
  save_random_teacher(str(root / 'fashion_teacher'), tiny.get_config(), 10, 1)
  photo_config = rs_config()
  photo_config.dtype = 'float32'
  save_random_teacher(str(root / 'photo_teacher'), photo_config, 3, 3,
                      sorted(photo_dataset.PHOTOS[:3]))
  workdir = str(tmp_path_factory.mktemp('hosts'))
  port = str(free_port())
  # Each host compiles for itself: a compilation cache shared with the other host (the test
  # run's, tests/conftest.py) hands it programs built for the other's devices, and both hang.
  env = process_env(devices=2, drop=('JAX_COMPILATION_CACHE_DIR',))
  # Each host writes to a file, not a pipe: read one pipe at a time and the other host, its
  # pipe full, blocks in a write while this one waits for it in a collective (a hang seen).
  logs = [root / f'host{i}.log' for i in range(2)]
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(i),
                             '2', port, workdir, str(root)], env=env, stdout=log.open('w'),
                            stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
  for p in procs:
    p.wait(timeout=900)
  outputs = [log.read_text() for log in logs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  results = [json.loads(line.split(' ', 1)[1]) for out in outputs
             for line in out.splitlines() if line.startswith('RESULT ')]
  return workdir, str(root), results, outputs


def of_run(results, run):
  found = [r for r in results if r['run'] == run]
  assert sorted(r['process'] for r in found) == [0, 1], run
  return found


def test_two_hosts_train_like_one_process_with_the_same_devices(two_hosts, tmp_path, tiny):
  fashion = of_run(two_hosts[2], 'fashion')
  assert fashion[0]['devices'] == 4
  one = train.train_and_evaluate(tiny(), str(tmp_path),
                                 mesh=sharding.create_mesh(jax.devices()[:4]))
  for r in fashion:
    assert r['num_examples'] == 500  # every example once across the two hosts
    for key in ('loss', 'ema_loss', 'top1', 'ema_top1'):
      np.testing.assert_allclose(r[key], one[key], rtol=1e-4, err_msg=key)


def test_two_hosts_stream_their_own_shares_of_a_folder_dataset(two_hosts):
  from test_sources_e2e import VALIDATION
  folder = of_run(two_hosts[2], 'folder')
  assert folder[0] == folder[1] | {'process': folder[0]['process']}  # one global result
  assert folder[0]['num_examples'] == len(VALIDATION) and np.isfinite(folder[0]['loss'])


def test_two_hosts_label_their_own_shards_as_one_process_would(two_hosts, tmp_path):
  """rs.pseudo_label on 2 hosts: host 0 labels shards 0 and 2, host 1 shard 1, with no
  collectives; together they write what one process writes alone."""
  from rs import pseudo_label
  workdir, root, _, outputs = two_hosts
  for out, share in zip(outputs, ("2 of this host's 2 shards to do", "1 of this host's 1 shards "
                                  'to do')):
    assert out.count(share) == 2, out[-3000:]  # the Fashion-MNIST and the photographs' labelling
  one = str(tmp_path / 'one')
  manifest = pseudo_label.label(f'{root}/fashion_teacher', 'fashion_mnist', SPLIT, None, one,
                                num_shards=3)
  hosts = f'{workdir}/pseudo_fashion'
  for name in sorted(os.listdir(f'{one}/shards')):
    if name.endswith('.npz'):
      a, b = np.load(f'{one}/shards/{name}'), np.load(f'{hosts}/shards/{name}')
      assert sorted(a) == sorted(b)
      for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=f'{name} {key}')
  with open(f'{hosts}/manifest.json') as f:
    theirs = json.load(f)
  assert manifest['examples'] == theirs['examples'] == 200
  for key in ('per_class', 'selection', 'undecodable'):
    assert theirs[key] == manifest[key], key


def test_two_hosts_train_an_in_memory_student_like_one_process(two_hosts, tmp_path, tiny):
  workdir, _, results, _ = two_hosts
  student = of_run(results, 'fashion_student')
  config = tiny()
  config.data.pseudo.update({'dir': f'{workdir}/pseudo_fashion', 'ratio': 1.0})
  one = train.train_and_evaluate(config, str(tmp_path),
                                 mesh=sharding.create_mesh(jax.devices()[:4]))
  for r in student:
    for key in ('loss', 'ema_loss', 'top1', 'ema_top1', 'num_examples'):
      np.testing.assert_allclose(r[key], one[key], rtol=1e-4, err_msg=key)


def test_two_hosts_stream_a_student_on_their_own_pseudo_labeled_shards(two_hosts):
  from test_sources_e2e import VALIDATION
  student = of_run(two_hosts[2], 'photo_student')
  assert student[0] == student[1] | {'process': student[0]['process']}
  assert student[0]['num_examples'] == len(VALIDATION) and np.isfinite(student[0]['loss'])
