"""What a run reports, and where: clu writers (TensorBoard event files + log lines)."""
import json
import logging
import os
import time

import jax
import numpy as np
from clu import metric_writers, periodic_actions


def create_writer(workdir: str):
  """TensorBoard events under workdir/tb and log lines; only process 0 writes files."""
  return metric_writers.create_default_writer(
      os.path.join(workdir, 'tb'), just_logging=jax.process_index() > 0, asynchronous=True)


def write_config(workdir: str, config) -> None:
  """The resolved config, as JSON, so a run states exactly what it ran."""
  if jax.process_index() == 0:
    import tensorflow as tf  # gfile: local paths and gs:// alike
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


EVAL_FILE = 'eval.json'


def read_evals(workdir: str) -> list[dict]:
  """The evaluations a run has written (write_eval), oldest first; [] if none."""
  import tensorflow as tf
  path = os.path.join(workdir, EVAL_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_eval(workdir: str, step: int, epoch: float, result: dict[str, float]) -> None:
  """Adds one evaluation to workdir/eval.json (a JSON list, rewritten whole: GCS has no
  appends), for tools that compare finished runs (rs.tools.pareto). A re-run of a step replaces it."""
  if jax.process_index() != 0:
    return
  import tensorflow as tf
  evals = [e for e in read_evals(workdir) if e['step'] != step]
  evals.append({'step': step, 'epoch': epoch, **result})
  with tf.io.gfile.GFile(os.path.join(workdir, EVAL_FILE), 'w') as f:
    json.dump(sorted(evals, key=lambda e: e['step']), f, indent=1)


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """{step: value} of one scalar the run wrote to TensorBoard (e.g. 'train/loss'), for plots
  in a notebook and for tests; the latest value wins where a resumed run wrote a step twice."""
  import tensorflow as tf
  values = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(workdir, 'tb', 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
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



class _LibraryInfoFilter(logging.Filter):
  """Drops INFO lines from libraries that log every file they write (orbax) or probe (jax)."""
  NOISY = ('/orbax/', '/jax/_src/xla_bridge.py', '/tensorflow_datasets/')

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
  """Keep the log to rs's own progress lines (and every library warning)."""
  logging.getLogger('absl').addFilter(_LibraryInfoFilter())
