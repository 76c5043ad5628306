"""End to end on real Fashion-MNIST: devices, logging, checkpoints, exact resume."""
import os
import shutil

import jax
import numpy as np
import pytest

from rs import checkpoint, metrics, rundir, sharding, train
from rs.state import TrainState


def final_state(workdir) -> TrainState:
  """The latest checkpoint of a run, as host numpy arrays (no target tree needed)."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 1)
  restored = ckpt.restore()
  ckpt.close()
  return jax.device_get(restored)


@pytest.fixture
def eight_device_run(tiny_run):
  return tiny_run


def test_run_evaluates_whole_split_and_logs(eight_device_run):
  workdir, result = eight_device_run
  assert result['num_examples'] == 500  # every example once, padding masked
  for key in ('top1', 'top5', 'ema_top1', 'ema_top5'):
    assert 0.0 <= result[key] <= 1.0
  assert 0.0 < result['loss'] < 10.0 and 0.0 < result['ema_loss'] < 10.0
  assert result['top5'] >= result['top1']
  losses = metrics.read_scalars(workdir, 'train/loss')
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  for tag in ('train/images_per_sec', 'train/learning_rate', 'eval/ema_top1', 'train/eta_minutes'):
    assert metrics.read_scalars(workdir, tag), tag
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']
  # eval.json (for rs.tools.pareto): the one evaluation, at step 6, equal to the returned result.
  (saved,) = rundir.read_evals(workdir)
  assert saved['step'] == 6 and saved['epoch'] == pytest.approx(6 * 32 / 3_200)
  assert {k: saved[k] for k in result} == pytest.approx(result)


def test_one_device_gives_the_same_losses(eight_device_run, tmp_path, tiny):
  workdir8, result8 = eight_device_run
  workdir1 = str(tmp_path)
  # The 8-device run's BN groups are its per-device batches (32 / 8): ask for the same here.
  config = tiny()
  config.model.bn_group_size = 4
  result1 = train.train_and_evaluate(config, workdir1, mesh=sharding.create_mesh(jax.devices()[:1]))
  l8 = metrics.read_scalars(workdir8, 'train/loss')
  l1 = metrics.read_scalars(workdir1, 'train/loss')
  # float32 reduction orders differ; BN over groups of 4 amplifies them to ~3e-5 by step 6.
  np.testing.assert_allclose([l8[s] for s in sorted(l8)], [l1[s] for s in sorted(l1)],
                             rtol=1e-4)
  assert result1['top1'] == pytest.approx(result8['top1'], abs=2 / 500)


def test_stopped_and_resumed_run_equals_uninterrupted_bit_for_bit(eight_device_run, tmp_path, tiny):
  workdir, _ = eight_device_run
  # A run that stopped after its step-3 checkpoint: only that checkpoint is on disk.
  resumed = str(tmp_path)
  os.makedirs(os.path.join(resumed, 'checkpoints'))
  shutil.copytree(os.path.join(workdir, 'checkpoints', '3'),
                  os.path.join(resumed, 'checkpoints', '3'))
  result = train.train_and_evaluate(tiny(), resumed)
  assert sorted(metrics.read_scalars(resumed, 'train/loss')) == [4, 5, 6]  # it did not start over
  # Running a finished workdir again trains nothing and reports the same evaluation.
  assert train.train_and_evaluate(tiny(), resumed) == result
  # With a shorter schedule too: the step-6 evaluation, as eval.json has it (unchanged).
  evals = rundir.read_evals(resumed)
  assert train.train_and_evaluate(tiny(train_steps=4), resumed) == result
  assert rundir.read_evals(resumed) == evals and evals[-1]['step'] == 6
  a, b = final_state(workdir), final_state(resumed)
  assert int(a['step']) == int(b['step']) == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_checkpoint_round_trip_is_exact(eight_device_run, tmp_path):
  workdir, _ = eight_device_run
  state = final_state(workdir)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=2)
  mesh = sharding.create_mesh()
  placed = jax.device_put(state, sharding.replicated(mesh))
  assert ckpt.maybe_save(6, placed)
  ckpt.wait()
  back = ckpt.restore(checkpoint.abstract_like(placed, sharding.replicated(mesh)))
  ckpt.close()
  for x, y in zip(jax.tree.leaves(placed), jax.tree.leaves(back)):
    assert x.dtype == y.dtype and x.sharding.is_equivalent_to(y.sharding, x.ndim)
    np.testing.assert_array_equal(x, y)


def test_an_evaluation_over_cpu_devices_on_busy_cores_does_not_deadlock():
  """XLA:CPU deadlocks when independent programs with all-reduces over several CPU devices are
  in flight at once; the evaluation runs them one at a time there. The script evaluates 3 times
  (2 sets x 40 batches on 8 devices) with both cores busy: before that rule it aborted at XLA's
  collective timeout in the first evaluation, every time (scripts/cpu_collectives_deadlock.py
  --evaluate=concurrent still does)."""
  import subprocess
  import sys
  from conftest import ROOT, process_env
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'cpu_collectives_deadlock.py'),
       '--evaluate=rs', '--rounds=3', '--timeout=60'],
      env=process_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count('done at') == 3


def test_indivisible_batch_is_a_clear_error(tmp_path, tiny):
  with pytest.raises(ValueError, match='batch_size=30 does not divide over 8 devices'):
    train.train_and_evaluate(tiny(batch_size=30), str(tmp_path))


def test_the_loop_reads_device_values_only_at_log_eval_and_save_points(tmp_path, tiny,
                                                                       monkeypatch):
  """The training thread reads a device value only inside rs.train's host_sync() blocks (the
  metrics at log points, evaluations, checkpoint saves and restores): steps are never waited
  for on the host's behalf. Two guards: JAX's transfer guard forbids implicit transfers (on
  accelerators both ways; XLA:CPU enforces only host-to-device, e.g. a Python number passed
  to the step each time), and every host read of a jax.Array's value from this thread outside
  host_sync() fails (the CPU's zero-copy reads included). Logging every 3 steps and saving
  every 4 leaves steps that pass no such point; the second run resumes from a checkpoint."""
  import contextlib
  import threading
  from jax._src import array as jax_array
  inside = []

  @contextlib.contextmanager
  def counted_host_sync():
    inside.append(True)
    try:
      with jax.transfer_guard('allow'):
        yield
    finally:
      inside.pop()

  read = jax_array.ArrayImpl._value.fget
  reads = []

  def guarded(array):
    if threading.current_thread() is threading.main_thread():
      assert inside, 'a device value was read on the host outside host_sync()'
      reads.append(1)
    return read(array)

  monkeypatch.setattr(train, 'host_sync', counted_host_sync)
  monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(guarded))
  mesh = sharding.create_mesh(jax.devices()[:1])
  run = lambda steps: train.train_and_evaluate(
      tiny(train_steps=steps, log_every_steps=3, checkpoint_every_steps=4, eval_every_steps=6),
      str(tmp_path), mesh=mesh)
  with jax.transfer_guard('disallow'):
    first, resumed = run(5), run(6)
  assert first['num_examples'] == resumed['num_examples'] == 500
  assert reads  # the guard saw the sanctioned reads
  monkeypatch.undo()
  assert sorted(metrics.read_scalars(str(tmp_path), 'train/loss')) == [3, 5, 6]
  # Either guard fails a read outside host_sync (here: of a fresh array on this thread).
  monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(guarded))
  with pytest.raises(AssertionError, match='outside host_sync'):
    float(jax.numpy.ones(3).sum())
