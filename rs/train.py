"""The ResNet-RS trainer, top to bottom: checks, input, programs, state, then the step loop with
its logging, evaluation and checkpoints.

Importable from a notebook: `train_and_evaluate(config, workdir)` runs (or resumes) a run and
returns the final evaluation.

The host waits for the device only where it must: when the state is set up, at log points
(the metrics), evaluations and checkpoint saves. Each such place is a `host_sync()` block;
everywhere else steps are dispatched ahead of the device, and tests/test_train.py runs the
trainer with any other transfer forbidden.
"""
import contextlib
import dataclasses
import itertools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections

from rs import checkpoint, memory, metrics, optim, preemption, rundir, sharding, transfer
from rs import validate
from rs.errors import UserError
from rs import weights as weights_lib
from rs.data import pipeline as pipeline_lib
from rs.programs import build_training, step_rows, train_step_bytes


def host_sync():
  """A place where host and device deliberately exchange values (a transfer guard may forbid
  them elsewhere)."""
  return jax.transfer_guard('allow')


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
  # The programs of every batch and set do not depend on each other: on several CPU devices,
  # two in flight at once can deadlock at their all-reduces (rs.sharding).
  one_at_a_time = sharding.one_program_at_a_time(mesh)
  totals = {}
  for batch in pipeline.eval_iter():
    batch = sharding.to_global(batch, mesh)
    for prefix, variables in weights.items():
      sums = eval_fn(variables, batch)
      if one_at_a_time:
        jax.block_until_ready(sums)
      totals[prefix] = jax.tree.map(jnp.add, totals[prefix], sums) if prefix in totals else sums
  result = {}
  with host_sync():
    totals = jax.device_get(totals)
  for prefix, sums in totals.items():
    count = sums.pop('count')
    result |= {f'{prefix}{k}': float(v / count) for k, v in sums.items()}
  result['num_examples'] = int(count)
  if pipeline.eval_skipped:  # undecodable images left out (class folders)
    result['undecodable'] = pipeline.eval_skipped
  return result


def start_from_weights(state, directory: str, sharding_, skip: str | None = None,
                       channels: int = 3):
  """`state` with its weights (raw and EMA) replaced by saved ones (rs.export's, rs.convert's),
  except those matching the regex `skip` (config.init_skip: e.g. a new classifier); weights
  for images of another channel count than this network's `channels` get their input
  convolution adapted (rs.transfer)."""
  initial = {'params': state.params, 'batch_stats': state.batch_stats}
  saved = weights_lib.read_variables(directory)  # merge names what differs from the network
  saved_channels = weights_lib.saved_channels(directory)
  variables, report = transfer.merge(
      initial, saved, skip, channels=saved_channels and (saved_channels, channels))
  try:
    description = weights_lib.read(directory)
    source = f'{directory} ({description.model}, {description.source.get("tool")})'
  except weights_lib.WeightsError:  # the arrays are all a start needs
    source = directory
  transfer.log_report(report, source)
  variables = jax.device_put(variables, sharding_)
  # The EMA gets its own buffers: the train step donates every leaf of the state.
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                       ema_params=copy(variables['params']),
                       ema_batch_stats=copy(variables['batch_stats']))


class NonFiniteError(UserError, FloatingPointError):
  """A step's loss or gradient was NaN or infinite (config.on_nonfinite='stop')."""


def check_finite(config, state, ckpt, workdir: str) -> int:
  """The run's count of non-finite steps; raises NonFiniteError in 'stop' mode if any."""
  with host_sync():
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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The run's durations, in steps."""
  steps_per_epoch: float
  total: int
  warmup: int
  eval_every: int

  @classmethod
  def of(cls, config, steps_per_epoch: float) -> 'Schedule':
    return cls(steps_per_epoch, *(optim.steps_for(config, name, steps_per_epoch)
                                  for name in ('train', 'warmup', 'eval_every')))


def finished_evaluation(workdir: str, step: int, steps: Schedule, evaluate_now) -> dict:
  """The evaluation of a run already at or past the schedule's end: the one eval.json holds
  for its step (so the log and eval.json agree), else `evaluate_now()`, then written there."""
  if step > steps.total:
    logging.warning('The workdir is at step %d, past the %d steps this config trains: nothing '
                    'is trained, and the evaluation at step %d is reported. To train %d steps, '
                    'use a new --workdir.', step, steps.total, step, steps.total)
  saved = [e for e in rundir.read_evals(workdir) if e['step'] == step]
  if saved:
    result = {k: v for k, v in saved[0].items() if k not in ('step', 'epoch')}
    logging.info('Nothing left to train: the evaluation at step %d, from %s.', step,
                 rundir.EVAL_FILE)
  else:
    result = evaluate_now()
    rundir.write_eval(workdir, step, step / steps.steps_per_epoch, result)
  metrics.log_eval(step, result)
  return result


def describe(config, pipeline) -> weights_lib.Description:
  """What this run trains and how it evaluates: written as workdir/model.json, the description
  rs.export gives the run's weights."""
  return weights_lib.describe(config, pipeline.num_classes, pipeline.image_shape[-1],
                              pipeline.class_names, pipeline.native_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Trains (resuming from workdir's latest checkpoint if any); returns the final eval.

  `mesh` defaults to every device of every host on one data-parallel axis.
  """
  started = time.monotonic()
  mesh = mesh or sharding.create_mesh()
  # Everything that can be wrong with the config, the data or the workdir fails here, in one
  # line, before anything is compiled or written.
  validate.check_config(config, mesh)
  validate.check_workdir(config, workdir)
  with validate.data_errors():  # a dataset not found or not prepared, a split it lacks
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    pipeline = pipeline_lib.create_pipeline(config, local_devices=local_devices)
    steps = Schedule.of(config, pipeline.steps_per_epoch)  # streamed: counts the split
    validate.check_durations(config, pipeline.steps_per_epoch)
  validate.check_channels(config, pipeline.image_shape[-1])
  validate.check_init_fits(config, pipeline.num_classes, pipeline.image_shape)

  # One writer per workdir (a second run refuses here, naming the first); then the run's files.
  with rundir.NewWorkdir(workdir) as new_workdir, \
       rundir.Lock(workdir) as lock, \
       contextlib.closing(metrics.create_writer(workdir)) as writer, \
       checkpoint.Checkpointer(rundir.checkpoints(workdir), config.checkpoint_every_steps,
                               config.keep_checkpoints) as ckpt, \
       preemption.StopRequest() as stop:
    rundir.write_config(workdir, config)
    if jax.process_index() == 0:
      weights_lib.write_description(workdir, describe(config, pipeline))
    logging.info('%d devices, %d hosts; %s steps per epoch, %d steps in all.',
                 jax.device_count(), jax.process_count(),
                 metrics.steps_text(steps.steps_per_epoch), steps.total)

    # The programs: model, optimizer, state (created directly with its sharding), steps.
    schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, steps.warmup,
                                            steps.total, steps.steps_per_epoch)
    training = build_training(config, mesh, pipeline.num_classes, pipeline.image_shape,
                              schedule)

    # The state: the newest valid checkpoint, or a fresh one (from saved weights if asked).
    with host_sync():  # a seed, restored arrays and their fingerprints, saved weights
      rng = jax.random.key(config.seed)
      abstract = checkpoint.abstract_like(jax.eval_shape(training.init, rng),
                                          training.state_sharding)
      restored = ckpt.restore_latest_valid(abstract)
      if restored is not None:
        state, start_step = restored
        logging.info('Resumed from the checkpoint at step %d.', start_step)
      else:
        state = jax.jit(training.init, out_shardings=training.state_sharding)(rng)
        start_step = 0
        if config.init_from:
          state = start_from_weights(state, config.init_from, training.state_sharding,
                                     config.init_skip, pipeline.image_shape[-1])

    if start_step >= steps.total:  # nothing left to train: report the run's evaluation
      return finished_evaluation(workdir, start_step, steps, lambda: evaluate(
          training.eval_fn, weight_sets(state, config), pipeline, mesh))

    # Compile on the first batch and check the step fits the device before running it.
    batches = pipeline.train_iter(start_step)
    first = next(batches)
    logging.info('Compiling the train step.')
    train_fn = training.train_fn.lower(state, sharding.to_global(first, mesh)).compile()
    local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    limit = memory.device_limit(local_devices[0], sharing=len(local_devices),
                                held=memory.argument_bytes(train_fn))
    memory.check_fits(train_fn, 'The train step', limit, config.batch_size // mesh.size,
                      mesh.size, train_step_bytes(config, mesh, pipeline.num_classes,
                                                  pipeline.image_shape, schedule, first),
                      model=training.model)
    batches = itertools.chain([first], batches)
    new_workdir.keep()  # from here on the workdir holds work (logs, then checkpoints)

    throughput = metrics.Throughput(steps.total, step_rows(config), start_step)  # all images
    train_metrics, result = [], {}
    for step in range(start_step + 1, steps.total + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = train_fn(state, sharding.to_global(next(batches), mesh))
      ckpt.check_saves()  # a failed save stops the run here, not steps later
      train_metrics.append(step_metrics)

      if step % config.log_every_steps == 0 or step == steps.total:
        with host_sync():
          summary = metrics.mean_of(train_metrics) | throughput(step)
        summary['epoch'] = step / steps.steps_per_epoch
        summary['nonfinite_steps'] = check_finite(config, state, ckpt, workdir)
        writer.write_scalars(step, {f'train/{k}': v for k, v in summary.items()})
        logging.info(metrics.progress_line(step, steps.total, steps.total / steps.steps_per_epoch,
                                           summary))
        train_metrics = []
        lock.beat()

      if step % steps.eval_every == 0 or step == steps.total:
        # Steps are dispatched ahead of the device: finish them first, or their time would be
        # counted as eval time and left out of steps/s (which then came out up to 3x too high).
        with host_sync():
          jax.block_until_ready(state)
          start = time.monotonic()
          result = evaluate(training.eval_fn, weight_sets(state, config), pipeline, mesh)
        throughput.paused(time.monotonic() - start)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in result.items()})
        metrics.log_eval(step, result)
        rundir.write_eval(workdir, step, step / steps.steps_per_epoch, result)

      stopping = stop.signal_name is not None or ckpt.reached_preemption(step)
      if stopping or step == steps.total or ckpt.should_save(step):
        check_finite(config, state, ckpt, workdir)  # never save past a non-finite step
        with host_sync():
          ckpt.maybe_save(step, state, force=True)  # the policy was asked just above
      if stopping:
        logging.warning('Stopped at step %d (%s): checkpoint saved; run the same command to '
                        'resume.', step, stop.signal_name or 'preemption notice')
        return result
  base = workdir.rstrip('/')
  evaluation = f'Final evaluation: {metrics.eval_text(result)}' if result else 'Not evaluated'
  logging.info(
      f'Finished {steps.total} steps ({metrics.steps_text(steps.total / steps.steps_per_epoch)} '
      f'epochs) in {(time.monotonic() - started) / 60:.1f} min, '
      f'{throughput.images_per_sec(step):,.0f} training images/s. {evaluation}. Checkpoints: '
      f'{base}/checkpoints; TensorBoard: tensorboard --logdir={base}/tb; export the weights: '
      f'python -m rs.export --workdir={workdir} --out={base}/export')
  return result
