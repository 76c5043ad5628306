"""What a run reports, and where: clu writers (TensorBoard event files + log lines)."""
import logging
import time

import jax
import numpy as np
from clu import metric_writers, periodic_actions

from rs import rundir


def create_writer(workdir: str):
  """TensorBoard events under workdir/tb and log lines; only process 0 writes files."""
  return metric_writers.create_default_writer(
      str(rundir.path(workdir) / 'tb'), just_logging=jax.process_index() > 0, asynchronous=True)


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
  """steps/s, images/s and ETA between two log points, with eval time left out.

  clu's ReportProgress gives steps/s and ETA in TensorBoard and the work-unit notes; this adds
  images/s and puts all three in the log line of each report.
  """

  def __init__(self, total_steps: int, batch_size: int, start_step: int, writer):
    self._total = total_steps
    self._batch = batch_size
    self._last_step, self._last_time = start_step, time.monotonic()
    self._paused = 0.0
    self.report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)

  def paused(self, seconds: float) -> None:
    self._paused += seconds

  def __call__(self, step: int) -> dict[str, float]:
    now = time.monotonic()
    seconds = max(now - self._last_time - self._paused, 1e-9)
    steps_per_sec = (step - self._last_step) / seconds
    self._last_step, self._last_time, self._paused = step, now, 0.0
    eta = (self._total - step) / steps_per_sec if steps_per_sec else float('inf')
    return {'steps_per_sec': steps_per_sec, 'images_per_sec': steps_per_sec * self._batch,
            'eta_minutes': eta / 60}


def mean_of(metrics: list[dict]) -> dict[str, float]:
  """Per-key mean of a list of per-step metric dicts (device arrays fetched once)."""
  metrics = jax.device_get(metrics)
  return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


def log_line(prefix: str, step: int, values: dict[str, float]) -> None:
  logging.info('[%s %d] %s', prefix, step,
               ', '.join(f'{k}={v:.4g}' for k, v in sorted(values.items())))
