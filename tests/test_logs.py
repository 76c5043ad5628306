"""What a run shows: one readable line per log point and evaluation, a summary at the end, and
none of its libraries' start-up noise."""
import subprocess
import sys

import pytest

from conftest import ROOT, process_env
from rs import metrics


@pytest.mark.parametrize('count, text', [(1875.0, '1875'), (1.5, '1.5'), (7 / 3, '2.33'),
                                         (234.375, '234')])
def test_step_counts_are_written_as_people_write_them(count, text):
  assert metrics.steps_text(count) == text


def test_progress_line_has_the_step_of_the_total_the_epoch_rates_and_eta():
  values = {'loss': 0.78693, 'top1': 0.875391, 'learning_rate': 0.197408, 'epoch': 3.08148,
            'steps_per_sec': 8.24626, 'images_per_sec': 2111.04, 'eta_minutes': 10.625,
            'nonfinite_steps': 0, 'grad_norm': 0.5}
  assert metrics.progress_line(650, 5907, 28, values) == (
      '[train  650/5907] epoch 3.08/28: loss 0.7869, top-1 87.5%, lr 0.1974, 8.25 steps/s, '
      '2,111 images/s, ETA 10.6 min')
  del values['eta_minutes']  # the first interval of a run: no ETA yet
  assert metrics.progress_line(50, 5907, 28, values).endswith('2,111 images/s')


def test_eta_waits_for_an_interval_of_training_alone():
  throughput = metrics.Throughput(total_steps=100, batch_size=8, start_step=0)
  first = throughput(10)
  assert 'eta_minutes' not in first and first['images_per_sec'] == pytest.approx(
      8 * first['steps_per_sec'])
  second = throughput(20)
  assert second['eta_minutes'] == pytest.approx(80 / second['steps_per_sec'] / 60)
  assert throughput(100)['eta_minutes'] == 0


def test_evaluation_text_puts_raw_and_ema_side_by_side():
  result = {'top1': 0.9337, 'top5': 0.9988, 'loss': 0.2647, 'ema_top1': 0.9323,
            'ema_top5': 0.9992, 'ema_loss': 0.2613, 'num_examples': 6000}
  assert metrics.eval_text(result) == (
      'top-1 93.37% (EMA 93.23%), top-5 99.88% (EMA 99.92%), loss 0.2647 (EMA 0.2613), on '
      '6,000 images')
  plain = {'top1': 0.5, 'top5': 1.0, 'loss': 0.7, 'num_examples': 40, 'undecodable': 2}
  assert metrics.eval_text(plain) == ('top-1 50.00%, top-5 100.00%, loss 0.7, on 40 images (2 '
                                      'undecodable left out)')


def test_a_run_logs_each_line_once_ends_with_a_summary_and_hides_library_noise(tmp_path):
  workdir = tmp_path / 'run'
  env = process_env(drop=('TF_CPP_MIN_LOG_LEVEL',))
  run = subprocess.run([sys.executable, '-m', 'rs.main', '--config=configs/tiny.py',
                        f'--workdir={workdir}'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  log = run.stderr
  for noise in ('oneDNN', 'absl::InitializeLog', "backend 'tpu'", 'dataset_info.json',
                'overriding jax.Array', 'resize_bicubic', 'work unit notes'):
    assert noise not in log, noise
  lines = log.splitlines()
  count = lambda text: sum(text in line for line in lines)
  assert count('100 steps per epoch, 6 steps in all') == 1
  assert count('[train 6/6] epoch 0.06/0.06: loss ') == 1
  assert count('[eval 6] top-1 ') == 1 and count('[eval ') == 1
  assert '(EMA ' in next(line for line in lines if '[eval 6]' in line)
  assert 'ETA' in next(line for line in lines if '[train 2/6]' in line)  # from the 2nd interval
  assert 'ETA' not in next(line for line in lines if '[train 1/6]' in line)  # the first: no
  summary = next(line for line in lines if 'Finished 6 steps' in line)
  assert lines.index(summary) >= len(lines) - 2
  assert f'python -m rs.export --workdir={workdir} --out={workdir}/export' in summary
  assert f'Checkpoints: {workdir}/checkpoints; TensorBoard: tensorboard --logdir={workdir}/tb' \
      in summary
