"""rs.tools.compare_runs on run directories written the way rs.train writes them (TensorBoard
scalars through rs.metrics' writer, eval.json), with curves whose differences are known."""
import subprocess
import sys

import pytest

from rs import metrics, rundir
from rs.tools import compare_runs

STEPS = (50, 100, 150, 200)


def write_run(workdir, losses, rate, top1, steps=STEPS):
  writer = metrics.create_writer(str(workdir))
  for step, loss in zip(steps, losses):
    writer.write_scalars(step, {'train/loss': loss, 'train/images_per_sec': rate})
  writer.close()
  rundir.write_eval(str(workdir), steps[-1], 1.0, {'ema_top1': top1, 'top1': top1 - 0.01})
  return str(workdir)


def test_differences_speed_and_verdict_are_computed_from_the_curves(tmp_path):
  base = write_run(tmp_path / 'f32', [2.0, 1.0, 0.5, 0.4], 100.0, 0.90)
  # Relative differences 1%, 2%, 4%, 0%: max 4%, mean 1.75%; top-1 0.2 points lower.
  close = write_run(tmp_path / 'bf16', [2.02, 0.98, 0.52, 0.4], 150.0, 0.898)
  result = compare_runs.compare(base, close, loss_rtol=0.05, top1_atol=0.005)
  assert result.steps == 4
  assert result.max_rel_diff == pytest.approx(0.04)
  assert result.mean_rel_diff == pytest.approx(0.0175)
  assert result.top1 == pytest.approx(0.898)  # the EMA's, where the run kept one
  assert result.top1_diff == pytest.approx(-0.002)
  assert result.speedup == pytest.approx(1.5)
  assert result.passed
  # The tolerance applies to the mean difference (1.75%), not to the largest (4%).
  assert compare_runs.compare(base, close, loss_rtol=0.02).passed
  assert not compare_runs.compare(base, close, loss_rtol=0.015).passed
  assert not compare_runs.compare(base, close, loss_rtol=0.05, top1_atol=0.001).passed


def test_a_reseeded_baseline_sets_the_loss_tolerance(tmp_path):
  base = write_run(tmp_path / 'f32', [2.0, 1.0, 0.5, 0.4], 100.0, 0.90)
  reseeded = write_run(tmp_path / 'seed1', [2.04, 1.0, 0.5, 0.4], 100.0, 0.90)  # mean 0.5%
  closer = write_run(tmp_path / 'bf16', [2.02, 1.0, 0.5, 0.4], 100.0, 0.90)  # mean 0.25%
  further = write_run(tmp_path / 'x2', [2.0, 1.03, 0.5, 0.4], 100.0, 0.90)  # mean 0.75%
  _, tolerance, results = compare_runs.compare_all(base, [closer, further],
                                                    reference=reseeded)
  assert tolerance == pytest.approx(0.005)
  assert [r.run for r in results] == [reseeded, closer, further]
  assert [r.passed for r in results] == [True, True, False]


def test_only_steps_both_runs_logged_are_compared(tmp_path):
  base = write_run(tmp_path / 'a', [2.0, 1.0, 0.5, 0.4], 100.0, 0.9)
  shorter = write_run(tmp_path / 'b', [2.0, 1.1], 100.0, 0.9, steps=(50, 100))
  result = compare_runs.compare(base, shorter)
  assert result.steps == 2 and result.max_rel_diff == pytest.approx(0.1)
  with pytest.raises(ValueError, match='no step in common'):
    compare_runs.compare(base, write_run(tmp_path / 'c', [1.0], 1.0, 0.9, steps=(75,)))


def test_cli_prints_a_table_and_fails_when_a_run_is_out_of_tolerance(tmp_path):
  base = write_run(tmp_path / 'f32', [2.0, 1.0, 0.5, 0.4], 100.0, 0.90)
  far = write_run(tmp_path / 'far', [2.0, 1.5, 0.5, 0.4], 100.0, 0.90)
  proc = subprocess.run([sys.executable, '-m', 'rs.tools.compare_runs', f'--baseline={base}',
                         f'--runs={far}'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert '| 50.00% / 12.50% |' in proc.stdout and '| NO |' in proc.stdout
