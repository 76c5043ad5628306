"""Real training processes killed (SIGKILL) and stopped (SIGTERM, SIGINT), then resumed.

One workdir goes through seven interruptions - while compiling, between checkpoints, while an
asynchronous checkpoint is written, during an evaluation, by SIGTERM, by SIGINT and in the middle
of the final save - and is then completed; its final state must equal, bit for bit, that of
the same command run without interruption.
"""
import os
import re
import signal

import jax
import numpy as np
import pytest

from rs import checkpoint
from rs.tools import soak

STEPS = 24
OVERRIDES = (f'--config.train_steps={STEPS}', '--config.checkpoint_every_steps=4',
             '--config.keep_checkpoints=3', '--config.eval_every_steps=12',
             '--config.log_every_steps=1', '--config.data.eval_split=test[:128]')


def run_graceful(workdir, env, step, signum):
  """The trainer sent `signum` once step `step` is logged; (attempt, seconds it took to exit)."""
  attempt = soak.run_once(workdir, env, OVERRIDES, signal_when=(signum, soak.at_step(step)))
  return attempt, attempt.seconds_after_signal


def checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


@pytest.fixture(scope='module')
def env():
  return soak.environment(devices=2)  # with the test run's compilation cache (conftest)


def test_interrupted_run_resumes_to_the_uninterrupted_state(tmp_path, env):
  reference = soak.run_once(str(tmp_path / 'reference'), env, OVERRIDES)
  assert reference.returncode == 0 and reference.last_step == STEPS
  workdir = str(tmp_path / 'run')

  # 1. While compiling: nothing saved yet; the next start begins afresh.
  a = soak.run_once(workdir, env, OVERRIDES, kill_when=soak.at_startup)
  assert a.killed and a.last_step == 0
  # 2. Between checkpoints (step 6; the step-4 save may still be unfinished).
  a = soak.run_once(workdir, env, OVERRIDES, kill_when=soak.at_step(6))
  assert a.killed and a.resumed_from is None and a.last_step >= 6
  # 3. While the step-8 checkpoint is being written: its temporary directory is left behind.
  a = soak.run_once(workdir, env, OVERRIDES, kill_when=soak.mid_save(after_step=4))
  assert a.killed and a.last_step == 8 and a.resumed_from in (None, 4)
  mid_save_seen = a.mid_save
  # 4. During the step-12 evaluation (it starts right after step 12's log line).
  a = soak.run_once(workdir, env, OVERRIDES, kill_when=soak.at_step(12))
  assert a.killed and a.last_step == 12 and a.resumed_from in (None, 4, 8)
  # 5. SIGTERM after step 14: the trainer ends the step, saves, waits for the save, exits 0.
  a, seconds = run_graceful(workdir, env, 14, signal.SIGTERM)
  stopped = int(re.search(r'Stopped at step (\d+) \(SIGTERM\)', ''.join(a.lines)).group(1))
  assert a.returncode == 0 and not a.killed and seconds < 30
  assert 14 <= stopped < STEPS and checkpoint_steps(workdir)[-1] == stopped
  assert not soak.saving_in_progress(workdir)  # the save was complete before it exited
  # 6. SIGINT (Ctrl-C) after the resumed run's next step: the same.
  a, seconds = run_graceful(workdir, env, stopped + 1, signal.SIGINT)
  assert a.resumed_from == stopped and a.returncode == 0 and seconds < 30
  stopped_again = int(re.search(r'Stopped at step (\d+) \(SIGINT\)', ''.join(a.lines)).group(1))
  assert checkpoint_steps(workdir)[-1] == stopped_again > stopped
  # 7. In the middle of the final save.
  a = soak.run_once(workdir, env, OVERRIDES, kill_when=soak.mid_save(after_step=STEPS - 1))
  assert a.killed and a.resumed_from == stopped_again
  mid_save_seen |= a.mid_save
  assert mid_save_seen, 'no kill landed while a checkpoint was being written'

  final = soak.run_once(workdir, env, OVERRIDES)
  assert final.returncode == 0 and final.resumed_from is not None
  # Every array of the final state equals the uninterrupted run's, bit for bit.
  assert soak.final_fingerprint(workdir) == soak.final_fingerprint(str(tmp_path / 'reference'))
  states = []
  for w in (workdir, str(tmp_path / 'reference')):
    ckpt = checkpoint.Checkpointer(os.path.join(w, 'checkpoints'), 1, 1)
    states.append(jax.device_get(ckpt.restore()))
    ckpt.close()
  assert int(states[0]['step']) == STEPS
  for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(x, y)
