"""One writer per workdir (rs.rundir.Lock): a second run refuses in one line naming the first;
a lock left by a run that is gone is taken over."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from rs import rundir, train


def dead_pid() -> int:
  """The pid of a process that has exited."""
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'lock'), 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': os.getpid(), 'started': '2026-12-01T10:00:00',
               'token': 'theirs', **holder}, f)


def test_a_second_run_refuses_naming_the_first_and_may_start_once_it_ends(tmp_path):
  first = rundir.Lock(str(tmp_path))
  first.acquire()
  with pytest.raises(rundir.WorkdirInUse) as error:
    rundir.Lock(str(tmp_path)).acquire()
  assert str(error.value) == (
      f'{tmp_path} is in use by another run (host {socket.gethostname()}, pid {os.getpid()}, '
      f'started {first.owner["started"]}): wait for it to end or use another --workdir; if '
      f'that run is gone, delete {tmp_path}/lock')
  first.release()
  assert not (tmp_path / 'lock').exists()
  with rundir.Lock(str(tmp_path)):
    assert json.loads((tmp_path / 'lock').read_text())['pid'] == os.getpid()


def test_the_lock_of_a_killed_run_on_this_host_is_taken_over(tmp_path, caplog):
  write_lock(tmp_path, pid=dead_pid())
  with rundir.Lock(str(tmp_path)) as lock:
    assert json.loads((tmp_path / 'lock').read_text())['token'] == lock.owner['token']
  assert 'Taking over the workdir lock of a run that is gone' in caplog.text


@pytest.mark.parametrize('age_s, refused', [(60, True), (3600, False)])
def test_another_hosts_lock_is_stale_once_its_heartbeat_stops(tmp_path, age_s, refused):
  write_lock(tmp_path, host='another-host', pid=1)
  old = time.time() - age_s
  os.utime(tmp_path / 'lock', (old, old))
  lock = rundir.Lock(str(tmp_path), stale_after_s=900)
  if refused:
    with pytest.raises(rundir.WorkdirInUse, match='host another-host, pid 1'):
      lock.acquire()
  else:
    lock.acquire()
    lock.release()


def test_without_exclusive_create_the_run_whose_token_was_overwritten_refuses(tmp_path,
                                                                              monkeypatch):
  """gs://'s scheme: write, settle, read back. A run that wrote in between wins."""
  lock = rundir.Lock(str(tmp_path), settle_s=0, exclusive_create=False)
  monkeypatch.setattr(rundir.time, 'sleep',
                      lambda s: write_lock(tmp_path, host='racer', pid=7, token='racer'))
  with pytest.raises(rundir.WorkdirInUse, match='host racer, pid 7'):
    lock.acquire()
  monkeypatch.undo()
  lock = rundir.Lock(str(tmp_path / 'alone'), settle_s=0, exclusive_create=False)
  lock.acquire()
  assert lock.held
  lock.release()


def test_training_on_a_workdir_in_use_changes_nothing(tmp_path, tiny):
  workdir = tmp_path / 'run'
  write_lock(workdir)  # this process: alive
  with pytest.raises(rundir.WorkdirInUse, match='is in use by another run'):
    train.train_and_evaluate(tiny(), str(workdir))
  assert os.listdir(workdir) == ['lock']


def test_a_finished_run_leaves_no_lock(tiny_run):
  assert os.path.exists(os.path.join(tiny_run[0], 'config.json'))
  assert not os.path.exists(os.path.join(tiny_run[0], 'lock'))
