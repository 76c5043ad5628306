"""What a run reports, and where: TensorBoard event files (clu's writer, every scalar) and one
readable log line per log point and evaluation (`progress_line`, `log_eval`)."""
import logging
import time

import jax
import numpy as np

from rs import rundir


def create_writer(workdir: str):
  """TensorBoard events under workdir/tb, written asynchronously by process 0 (the others
  write nothing). Not clu's default writer: its logging writer would print every line this
  module prints again."""
  # clu imports TensorFlow: here, not at the top, so that importing rs.metrics does not (the
  # commands import TensorFlow themselves, quietly: rs.logs).
  from clu import metric_writers
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(
      metric_writers.SummaryWriter(str(rundir.path(workdir) / 'tb')))


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """{step: value} of one scalar the run wrote to TensorBoard (e.g. 'train/loss'), for plots
  in a notebook and for tests; the latest value wins where a resumed run wrote a step twice."""
  import tensorflow as tf  # the event file format
  values = {}
  for path in sorted(rundir.path(workdir).glob('tb/events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return dict(sorted(values.items()))


class Throughput:
  """steps/s, images/s and ETA between two log points, with evaluation time left out.

  The first interval of a run (or a resume) also holds one-time work (the first steps' buffer
  set-up, the first save's program): its rate is reported, but the ETA waits for the second
  interval, which is training alone. Also keeps the run's totals for the final summary.
  """

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self._total = total_steps
    self._batch = batch_size
    self._last_step, self._last_time = start_step, time.monotonic()
    self._paused = 0.0
    self._intervals = 0
    self.started, self.start_step = self._last_time, start_step
    self.paused_total = 0.0

  def paused(self, seconds: float) -> None:
    self._paused += seconds
    self.paused_total += seconds

  def __call__(self, step: int) -> dict[str, float]:
    now = time.monotonic()
    seconds = max(now - self._last_time - self._paused, 1e-9)
    steps_per_sec = (step - self._last_step) / seconds
    self._last_step, self._last_time, self._paused = step, now, 0.0
    self._intervals += 1
    result = {'steps_per_sec': steps_per_sec, 'images_per_sec': steps_per_sec * self._batch}
    if self._intervals > 1 or step == self._total:
      result['eta_minutes'] = (self._total - step) / steps_per_sec / 60 if steps_per_sec else 0.0
    return result

  def images_per_sec(self, step: int) -> float:
    """The run's (this process's) training images per second so far, evaluations left out."""
    seconds = time.monotonic() - self.started - self.paused_total
    return (step - self.start_step) * self._batch / max(seconds, 1e-9)


def steps_text(count: float) -> str:
  """1875 for 1875.0, 1.5 for 1.5, 2.33 for 2.3333: a step count as people write it."""
  return f'{count:.0f}' if float(count).is_integer() else f'{count:.3g}'


def progress_line(step: int, total: int, epochs: float, values: dict[str, float]) -> str:
  """[train 650/5907] epoch 3.08/28: loss 0.7869, top-1 87.5%, lr 0.1974, 8.2 steps/s,
  2,111 images/s, ETA 10.6 min."""
  parts = [f"loss {values['loss']:.4g}"]
  if 'top1' in values:
    parts.append(f"top-1 {100 * values['top1']:.1f}%")
  parts += [f"lr {values['learning_rate']:.4g}", f"{values['steps_per_sec']:.3g} steps/s",
            f"{values['images_per_sec']:,.0f} images/s"]
  if values.get('nonfinite_steps'):
    parts.append(f"{values['nonfinite_steps']:.0f} non-finite steps skipped")
  if 'eta_minutes' in values:
    parts.append(f"ETA {_minutes(values['eta_minutes'])}")
  width = len(str(total))
  return (f"[train {step:>{width}}/{total}] epoch {values['epoch']:.3g}/{steps_text(epochs)}: "
          + ', '.join(parts))


def _minutes(minutes: float) -> str:
  return f'{minutes:.1f} min' if minutes < 120 else f'{minutes / 60:.1f} h'


def mean_of(metrics: list[dict]) -> dict[str, float]:
  """Per-key mean of a list of per-step metric dicts (device arrays fetched once)."""
  metrics = jax.device_get(metrics)
  return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


def eval_text(result: dict[str, float]) -> str:
  """top-1 93.37% (EMA 93.23%), top-5 99.88% (EMA 99.92%), loss 0.2647 (EMA 0.2613), on
  6,000 images."""
  parts = []
  for name, key, percent in (('top-1', 'top1', True), ('top-5', 'top5', True),
                             ('loss', 'loss', False)):
    text = lambda v: f'{100 * v:.2f}%' if percent else f'{v:.4g}'
    part = f'{name} {text(result[key])}'
    if f'ema_{key}' in result:
      part += f' (EMA {text(result[f"ema_{key}"])})'
    parts.append(part)
  text = ', '.join(parts) + f", on {result['num_examples']:,} images"
  if result.get('undecodable'):
    text += f" ({result['undecodable']} undecodable left out)"
  return text


def log_eval(step: int, result: dict[str, float]) -> None:
  logging.info('[eval %d] %s', step, eval_text(result))
