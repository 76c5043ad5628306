"""The ResNet-RS trainer, top to bottom: mesh, input, model, state, steps, restore, loop, eval.

Importable from a notebook: `train_and_evaluate(config, workdir)` runs (or resumes) a run and
returns the final evaluation.
"""
import itertools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections

from rs import checkpoint, memory, metrics, optim, preemption, sharding, transfer, validate
from rs.data import pipeline as pipeline_lib
from rs.programs import build_training


def weight_sets(state, config) -> dict[str, dict]:
  """The weights an evaluation scores, by metric prefix: the raw ones (''), and their EMA
  ('ema_') where the run keeps one. With ema_decay 0 the EMA equals the raw weights exactly,
  so it is not evaluated a second time."""
  sets = {'': {'params': state.params, 'batch_stats': state.batch_stats}}
  if config.ema_decay:
    sets['ema_'] = {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}
  return sets


def evaluate(eval_fn, weights: dict[str, dict], pipeline, mesh) -> dict[str, float]:
  """top-1/top-5/loss of each set of `weights` (prefix -> variables) over the whole eval
  split, exactly: each batch is sent to the devices once and scored by every set."""
  totals = {}
  for batch in pipeline.eval_iter():
    batch = sharding.to_global(batch, mesh)
    for prefix, variables in weights.items():
      sums = eval_fn(variables, batch)
      totals[prefix] = jax.tree.map(jnp.add, totals[prefix], sums) if prefix in totals else sums
  result = {}
  for prefix, sums in jax.device_get(totals).items():
    count = sums.pop('count')
    result |= {f'{prefix}{k}': float(v / count) for k, v in sums.items()}
  result['num_examples'] = int(count)
  if getattr(pipeline, 'eval_skipped', 0):  # undecodable images left out (class folders)
    result['undecodable'] = pipeline.eval_skipped
  return result


def start_from_weights(state, directory: str, sharding_, skip: str | None = None):
  """`state` with its weights (raw and EMA) replaced by saved ones (rs.export's, rs.convert's),
  except those matching the regex `skip` (config.init_skip: e.g. a new classifier)."""
  initial = {'params': state.params, 'batch_stats': state.batch_stats}
  saved, meta = checkpoint.load_variables(directory)
  variables, report = transfer.merge(initial, saved, skip)
  transfer.log_report(report, f'{directory} ({meta.get("model")}, {meta.get("source")})')
  variables = jax.device_put(variables, sharding_)
  # The EMA gets its own buffers: the train step donates every leaf of the state.
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                       ema_params=copy(variables['params']),
                       ema_batch_stats=copy(variables['batch_stats']))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Trains (resuming from workdir's latest checkpoint if any); returns the final eval.

  `mesh` defaults to every device of every host on one data-parallel axis.
  """
  mesh = mesh or sharding.create_mesh()
  # Everything that can be wrong with the config, the data or the workdir fails here, in one
  # line, before anything is compiled or written.
  validate.check_config(config, mesh)
  validate.check_workdir(config, workdir)
  with validate.data_errors():  # a dataset not found or not prepared, a split it lacks
    pipeline = pipeline_lib.create_pipeline(config)
    steps_per_epoch = pipeline.steps_per_epoch  # streamed: counts the training split
    validate.check_durations(config, steps_per_epoch)
  metrics.write_config(workdir, config)
  writer = metrics.create_writer(workdir)

  total_steps = optim.steps_for(config, 'train', steps_per_epoch)
  warmup_steps = optim.steps_for(config, 'warmup', steps_per_epoch)
  eval_every = optim.steps_for(config, 'eval_every', steps_per_epoch)
  logging.info('%d devices, %d hosts; %.1f steps per epoch; %d steps in all.',
               jax.device_count(), jax.process_count(), steps_per_epoch, total_steps)

  # Model, optimizer, state (created directly with its sharding), compiled steps.
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, warmup_steps,
                                          total_steps, steps_per_epoch)
  training = build_training(config, mesh, pipeline.num_classes, pipeline.image_shape, schedule)
  init, state_sharding = training.init, training.state_sharding
  train_fn, eval_fn = training.train_fn, training.eval_fn
  rng = jax.random.key(config.seed)

  ckpt = checkpoint.Checkpointer(f'{workdir}/checkpoints', config.checkpoint_every_steps,
                                 config.keep_checkpoints)
  try:
    abstract = checkpoint.abstract_like(jax.eval_shape(init, rng), state_sharding)
    restored = ckpt.restore_latest_valid(abstract)
    if restored is not None:
      state, step = restored
      logging.info('Resumed from the checkpoint at step %d.', step)
    else:
      state = jax.jit(init, out_shardings=state_sharding)(rng)
      if config.init_from:
        state = start_from_weights(state, config.init_from, state_sharding, config.init_skip)
    with preemption.StopRequest() as stop:
      result = _loop(config, workdir, state, pipeline, train_fn, eval_fn, mesh, ckpt, writer,
                     stop, total_steps, eval_every, steps_per_epoch)
  finally:
    writer.flush()
    ckpt.close()  # waits for the last asynchronous save to be complete on disk
  return result


class NonFiniteError(FloatingPointError):
  """A step's loss or gradient was NaN or infinite (config.on_nonfinite='stop')."""


def _check_finite(config, state, ckpt, workdir: str) -> int:
  """The run's count of non-finite steps; raises NonFiniteError in 'stop' mode if any."""
  count, first = (int(v) for v in jax.device_get((state.nonfinite_steps,
                                                   state.first_nonfinite_step)))
  if count and config.on_nonfinite == 'stop':
    last = ckpt.latest_step()
    saved = (f'the last good checkpoint, step {last}, is kept in {workdir}/checkpoints'
             if last is not None else 'no checkpoint was saved yet')
    raise NonFiniteError(
        f'non-finite loss or gradient at step {first} (update not applied); {saved}. Fix: lower '
        '--config.optimizer.base_learning_rate or check the data, or set '
        '--config.on_nonfinite=skip to skip such steps')
  return count


def _loop(config, workdir, state, pipeline, train_fn, eval_fn, mesh, ckpt, writer, stop,
          total_steps, eval_every, steps_per_epoch) -> dict[str, float]:
  """Steps from state.step to total_steps: log, evaluate, save; stops early on a signal."""
  start_step = int(state.step)
  throughput = metrics.Throughput(total_steps, config.batch_size, start_step, writer)
  train_metrics, result = [], {}
  batches = pipeline.train_iter(start_step)
  if start_step < total_steps:
    # Compile on the first batch and check the step fits the device before running it.
    first = next(batches)
    train_fn = train_fn.lower(state, sharding.to_global(first, mesh)).compile()
    local_device = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())
    memory.check_fits(train_fn, 'The train step', memory.device_limit(local_device))
    batches = itertools.chain([first], batches)
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, step_metrics = train_fn(state, sharding.to_global(next(batches), mesh))
    train_metrics.append(step_metrics)
    throughput.report(step)
    if step % config.log_every_steps == 0 or step == total_steps:
      summary = metrics.mean_of(train_metrics) | throughput(step)
      summary['epoch'] = step / steps_per_epoch
      summary['nonfinite_steps'] = _check_finite(config, state, ckpt, workdir)
      writer.write_scalars(step, {f'train/{k}': v for k, v in summary.items()})
      metrics.log_line('train', step, summary)
      train_metrics = []
    if step % eval_every == 0 or step == total_steps:
      # Steps are dispatched ahead of the device: finish them first, or their time would be
      # counted as eval time and left out of steps/s (which then came out up to 3x too high).
      jax.block_until_ready(state)
      start = time.monotonic()
      with throughput.report.timed('eval'):
        result = evaluate(eval_fn, weight_sets(state, config), pipeline, mesh)
      throughput.paused(time.monotonic() - start)
      writer.write_scalars(step, {f'eval/{k}': v for k, v in result.items()})
      metrics.log_line('eval', step, result)
      metrics.write_eval(workdir, step, step / steps_per_epoch, result)
    stopping = stop.signal_name is not None or ckpt.reached_preemption(step)
    if stopping or step == total_steps or ckpt.should_save(step):
      _check_finite(config, state, ckpt, workdir)  # never save past a non-finite step in 'stop'
      ckpt.maybe_save(step, state, force=True)  # the policy was asked just above
    if stopping:
      logging.warning('Stopped at step %d (%s): checkpoint saved; run the same command to '
                      'resume.', step, stop.signal_name or 'preemption notice')
      return result
  if start_step >= total_steps:  # a finished workdir: report its evaluation
    result = evaluate(eval_fn, weight_sets(state, config), pipeline, mesh)
    metrics.log_line('eval', int(state.step), result)
  return result
