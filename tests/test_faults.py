"""Damaged checkpoints and diverging runs: detected, reported in one line, nothing lost."""
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, process_env
from rs import checkpoint, metrics, train


def largest_array_file(step_dir):
  return max(glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True),
             key=os.path.getsize)


def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def overwrite_middle(path):
  """Bytes changed in place, size kept: orbax restores such a file without noticing."""
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b'\xde\xad\xbe\xef' * 4)


def remove_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def saved_fingerprint(step_dir):
  with open(os.path.join(step_dir, 'fingerprint', 'metadata')) as f:
    return json.load(f)


@pytest.fixture
def six_steps(tiny_run):
  """A finished 6-step run with checkpoints at steps 3 and 6 (copy it before changing it)."""
  return tiny_run[0]


@pytest.mark.parametrize('damage', ['truncate', 'overwrite', 'metadata'])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(six_steps, tmp_path, damage,
                                                              caplog):
  from conftest import tiny_config
  workdir = str(tmp_path / 'run')
  shutil.copytree(six_steps, workdir)
  step6 = os.path.join(workdir, 'checkpoints', '6')
  original = saved_fingerprint(step6)
  {'truncate': lambda: truncate(largest_array_file(step6)),
   'overwrite': lambda: overwrite_middle(largest_array_file(step6)),
   'metadata': lambda: remove_metadata(step6)}[damage]()

  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(tiny_config(), workdir)  # the same run: it must end as before
  # rs's own errors: orbax's reader threads may log theirs too, as many as happened to fail
  # (a truncated file: 1 to 15 seen).
  errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
            and r.pathname.startswith(os.path.join(ROOT, 'rs'))]
  assert len(errors) == 1 and 'step 6' in errors[0] and '\n' not in errors[0]
  assert any('Resumed from the checkpoint at step 3' in r.getMessage() for r in caplog.records)
  # The damaged checkpoint is kept aside, not deleted; steps 4-6 were recomputed exactly.
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6.corrupt'))
  assert saved_fingerprint(step6) == original
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6', '6.corrupt']


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(six_steps, tmp_path):
  from conftest import tiny_config
  workdir = str(tmp_path / 'run')
  shutil.copytree(six_steps, workdir)
  for step in ('3', '6'):
    remove_metadata(os.path.join(workdir, 'checkpoints', step))
  with pytest.raises(checkpoint.CheckpointError, match=r'none of the checkpoints \[6, 3\]'):
    train.train_and_evaluate(tiny_config(train_steps=9), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


def test_fingerprint_changes_with_any_bit():
  tree = {'a': np.arange(1000, dtype=np.float32), 'b': {'c': np.ones(3, np.int32)}}
  base = checkpoint.fingerprint(tree)
  assert sorted(base) == ['a', 'b/c']
  for index in (0, 1, 517, 999):
    for bit in (0, 13, 31):
      flipped = tree['a'].view(np.uint32).copy()
      flipped[index] ^= np.uint32(1 << bit)
      changed = checkpoint.fingerprint({**tree, 'a': flipped.view(np.float32)})
      assert changed['a'] != base['a'] and changed['b/c'] == base['b/c']
  # Swapping two values is not a no-op either: positions are weighted.
  swapped = tree['a'].copy()
  swapped[[3, 4]] = swapped[[4, 3]]
  assert checkpoint.fingerprint({**tree, 'a': swapped})['a'] != base['a']


# A learning rate of 1e36 overflows the weights at step 2, so every step from 3 on has a NaN
# loss: a real divergence, not an injected one.
DIVERGING = dict(train_steps=8, checkpoint_every_steps=2)


def test_nonfinite_loss_stops_with_the_step_and_last_good_checkpoint(tmp_path):
  from conftest import tiny_config
  config = tiny_config(**DIVERGING)
  config.optimizer.base_learning_rate = 1e36
  workdir = str(tmp_path / 'run')
  with pytest.raises(train.NonFiniteError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert 'at step 3' in message and 'last good checkpoint, step 2' in message
  assert '--config.on_nonfinite=skip' in message
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 1)
  kept = jax.device_get(ckpt.restore())
  ckpt.close()
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(kept['params']))


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
  from conftest import tiny_config
  config = tiny_config(**DIVERGING)
  config.optimizer.base_learning_rate = 1e36
  config.on_nonfinite = 'skip'
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  losses = metrics.read_scalars(workdir, 'train/loss')
  norms = metrics.read_scalars(workdir, 'train/grad_norm')
  bad_steps = [s for s in sorted(losses)
               if not (np.isfinite(losses[s]) and np.isfinite(norms[s]))]
  assert bad_steps == list(range(3, 9))  # counted independently, from the logged values
  assert metrics.read_scalars(workdir, 'train/nonfinite_steps') == {
      s: float(sum(b <= s for b in bad_steps)) for s in range(1, 9)}
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 5)
  final, after_2 = jax.device_get((ckpt.restore(step=8), ckpt.restore(step=2)))
  ckpt.close()
  assert int(final['step']) == 8 and int(final['nonfinite_steps']) == 6
  assert int(final['first_nonfinite_step']) == 3
  # Everything the six skipped updates would have changed is as it was after step 2.
  for tree in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats'):
    for x, y in zip(jax.tree.leaves(final[tree]), jax.tree.leaves(after_2[tree])):
      np.testing.assert_array_equal(x, y)


@pytest.fixture
def small_disk(tmp_path):
  """A 6 MB filesystem (tmpfs): room for two of configs/tiny.py's checkpoints, not three."""
  mount = tmp_path / 'small_disk'
  mount.mkdir()
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', str(mount)],
                        capture_output=True, text=True)
  if made.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {made.stderr.strip()}')
  yield mount
  subprocess.run(['umount', str(mount)], check=True)


def test_a_failed_save_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(small_disk):
  """The disk fills up during the step-9 save: the run stops with one line naming the step,
  the cause and the fix (not hundreds of orbax and asyncio lines), and step 6 restores."""
  workdir = small_disk / 'run'
  env = process_env()
  run = subprocess.run([sys.executable, '-m', 'rs.main', '--config=configs/tiny.py',
                        f'--workdir={workdir}', '--config.train_steps=12'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 1, run.stderr[-3000:]
  assert lines[-1] == (
      f'error: saving the checkpoint of step 9 in {workdir}/checkpoints failed (the disk is '
      'full), so the run stopped; the last complete checkpoint, step 6, is intact. Free space '
      'or fix the permissions there, then run the same command to resume')
  assert 'Traceback' not in run.stderr and len(lines) < 40, run.stderr[-3000:]
  ckpt = checkpoint.Checkpointer(str(workdir / 'checkpoints'), read_only=True)
  state, step = ckpt.restore_latest_valid()
  ckpt.close()
  assert step == 6 and int(state['step']) == 6
