"""The one place that talks to orbax: periodic async saves, keep-last-N, exact restore."""
import logging
import re

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from rs import distributed, logs, rundir
from rs.errors import UserError, one_line
from rs.state import path_name


def _plain_cpu_transfers() -> None:
  """On CPU, save each array from one replica instead of slicing it over all of them.

  orbax's replica-parallel saving splits a replicated array's device-to-host copy over its
  replicas, which pays on accelerators; on (fake multi-device) CPU it costs ~70 ms per array:
  measured 22 s vs 0.4 s to start saving 317 replicated arrays (7.9 MiB) on 8 CPU devices.
  """
  if jax.default_backend() == 'cpu':
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class CheckpointError(UserError, RuntimeError):
  """No checkpoint in the directory can be restored."""


@jax.jit
def _leaf_sums(leaves: list[jax.Array]) -> list[jax.Array]:
  def leaf(x):
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    else:
      unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
      bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    bits = bits.reshape(-1)
    weights = 2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1
    return jnp.sum(bits * weights, dtype=jnp.uint32)
  return [leaf(x) for x in leaves]


def fingerprint(tree) -> dict[str, int]:
  """{leaf path: sum_i bits_i * (2i + 1) mod 2**32} over each leaf's raw bits.

  Saved with every checkpoint and checked after restoring it, because orbax does not notice
  flipped bytes in an array file (measured: it restores them silently). Any single changed bit
  changes the sum (2**k times an odd number is never 0 mod 2**32 for k < 32). Computed on the
  devices in one small program: a save fetches one number per array, not the state.
  """
  paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(tree)[0])
  sums = jax.device_get(_leaf_sums([jnp.asarray(x) for x in leaves]))
  return {path_name(p): int(v) for p, v in zip(paths, sums)}


class Checkpointer:
  """Saves the whole TrainState under `directory/<step>/state` every `every_steps` steps.

  Saves are asynchronous (the step loop goes on while arrays are written) and atomic (orbax
  writes to a temporary directory and renames it when complete), so a crash mid-save leaves
  the previous checkpoint intact. Preemption notices also trigger a save (orbax's policy).
  Each checkpoint carries a fingerprint of the state (`fingerprint`), checked on restore:
  `restore_latest_valid` skips an unreadable or corrupted latest checkpoint.
  """

  def __init__(self, directory: str, every_steps: int = 1, keep: int = 1,
               read_only: bool = False):
    """`read_only` only restores: for reading a run's checkpoints from elsewhere (rs.export,
    a notebook) while it may still be training - a writer deletes unfinished saves, which
    would include the run's save in progress."""
    if every_steps < 1 or keep < 1:
      raise ValueError(f'checkpoint_every_steps={every_steps} and keep_checkpoints={keep} must '
                       'both be >= 1')
    _plain_cpu_transfers()
    self.read_only = read_only
    if not read_only:
      logs.drop_closed_loop_tracebacks()
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             cleanup_tmp_directories=False)
    else:
      options = ocp.CheckpointManagerOptions(
          save_decision_policy=policies.AnySavePolicy([
              policies.FixedIntervalPolicy(every_steps),
              # A custom decision policy drops orbax's default preemption save: add it back.
              policies.PreemptionCheckpointingPolicy(),
          ]),
          preservation_policy=policies.LatestN(keep),
          enable_async_checkpointing=True,
          # A save cut short (kill -9 mid-write) leaves <step>.orbax-checkpoint-tmp: never a
          # checkpoint, so removed on the next start.
          cleanup_tmp_directories=True)
    self.directory = rundir.path(directory)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'fingerprint'))
    self._saving = None  # the step of the newest save started

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `maybe_save(step, ...)` would save (the interval or a preemption notice)."""
    return self._manager.should_save(step)

  def maybe_save(self, step: int, state, force: bool = False) -> bool:
    """Starts an async save if the policy says so (or `force`); True if one started."""
    if not (force or self.should_save(step)):
      return False
    self.check_saves()
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          fingerprint=ocp.args.JsonSave(fingerprint(state))), force=force)
    except Exception as e:  # pylint: disable=broad-except (OSError, tensorstore's ValueError)
      # orbax finishes the save in flight first: its failure surfaces here, else this one's.
      if self._saving is None or self._saving in self.complete_steps():
        self._saving = step
      raise self._save_failed(e) from None
    if saved:
      self._saving = step
      logging.info('Saving checkpoint at step %d (asynchronously).', step)
    return saved

  def check_saves(self) -> None:
    """CheckpointError if an asynchronous save has failed (disk full, no permission): a run
    must not go on as if its work were saved. Cheap (no waiting): call it every step."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def complete_steps(self) -> list[int]:
    """The steps with a finished checkpoint on disk (a save in progress or failed is still in
    its temporary directory)."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

  def _save_failed(self, error: Exception) -> CheckpointError:
    logs.quiet_failed_save_tasks()
    text = str(error)
    why = ('the disk is full' if 'No space left' in text or 'RESOURCE_EXHAUSTED' in text else
           'permission denied' if 'Permission denied' in text or 'PERMISSION_DENIED' in text
           else f'{type(error).__name__}: {one_line(error, 160)}')
    done = [s for s in self.complete_steps() if s != self._saving]
    kept = (f'the last complete checkpoint, step {done[-1]}, is intact' if done
            else 'no complete checkpoint was saved before it')
    return CheckpointError(
        f'saving the checkpoint of step {self._saving} in {self.directory} failed ({why}), so '
        f'the run stopped; {kept}. Free space or fix the permissions there, then run the same '
        'command to resume')

  def restore(self, abstract_state=None, step: int | None = None):
    """The state at `step` (default: latest), placed as `abstract_state`'s shardings say.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings, so a checkpoint
    written on one topology restores onto another. Without it, the saved tree comes back as
    nested dicts of arrays on this process's first device, whatever devices and hosts wrote
    it (e.g. to inspect a pod's checkpoint in a notebook). Raises CheckpointError if the
    restored arrays do not match the saved fingerprint.
    """
    step = self.latest_step() if step is None else step
    has_fingerprint = (self.directory / str(step) / 'fingerprint').exists()

    def restore_as(target):
      args = {'state': ocp.args.StandardRestore(target)}
      if has_fingerprint:
        args['fingerprint'] = ocp.args.JsonRestore()
      return self._manager.restore(step, args=ocp.args.Composite(**args))

    try:
      restored = restore_as(abstract_state)
    except ValueError as e:
      if abstract_state is not None or not re.search(r'devices|topology', str(e), re.I):
        raise
      # Written on other devices (another host count): orbax wants a target; one device here.
      restored = restore_as(abstract_like(
          tree_metadata(str(self.directory / str(step) / 'state')),
          jax.sharding.SingleDeviceSharding(jax.local_devices()[0])))
    if has_fingerprint:
      saved, found = restored['fingerprint'], fingerprint(restored['state'])
      bad = sorted(k for k in saved.keys() | found.keys() if saved.get(k) != found.get(k))
      if bad:
        raise CheckpointError(f'{len(bad)} of {len(saved)} arrays differ from their saved '
                              f'fingerprint, e.g. {bad[0]} (the files changed after saving)')
    else:
      logging.warning('The checkpoint at step %d has no fingerprint: not verified.', step)
    return restored['state']

  def restore_latest_valid(self, abstract_state=None, steps: list[int] | None = None):
    """(state, step) from the newest checkpoint that restores and verifies; None if none exist.

    A newer checkpoint that fails (truncated, corrupted, missing files) is reported in one line
    and renamed to `<step>.corrupt` - kept for inspection, and out of the way of the step being
    saved again (read-only: only skipped). Raises CheckpointError if checkpoints exist but none
    restores (then nothing is renamed, so that no evidence is moved before a person looks).
    `abstract_state` may be a function of the step; `steps` limits the candidates.
    """
    steps = self.all_steps() if steps is None else steps
    failures = []
    for step in reversed(steps):
      try:
        target = abstract_state(step) if callable(abstract_state) else abstract_state
        state = self.restore(target, step)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        reason = one_line(e)
        logging.error('The checkpoint at step %d in %s is unreadable: %s: %s', step,
                      self.directory, type(e).__name__, reason)
        failures.append(step)
        continue
      if failures and not self.read_only:
        for bad in failures:
          self._move_aside(bad)
        logging.warning('Resuming from step %d instead; the unreadable checkpoint(s) %s were '
                        'renamed to <step>.corrupt.', step, failures)
        self._manager.reload()
      return state, step
    if failures:
      raise CheckpointError(f'none of the checkpoints {failures} in {self.directory} can be '
                            'restored (see the errors above): move them away to start afresh, '
                            'or use a new --workdir')
    return None

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      source = self.directory / str(step)
      earlier = len(list(self.directory.glob(f'{step}.corrupt*')))  # the step damaged before
      target = self.directory / (f'{step}.corrupt' + (f'.{earlier}' if earlier else ''))
      source.rename(target)
    distributed.sync_hosts(f'rs_move_aside_{step}')

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    """Waits for the last asynchronous save to be complete on disk, then stops orbax's
    threads; CheckpointError if the save failed (orbax raises it again on closing)."""
    failure = None
    if not self.read_only:
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        failure = self._save_failed(e)
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      failure = failure or self._save_failed(e)
    if failure is not None:
      raise failure

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, exc_type, exc, traceback) -> bool:
    try:
      self.close()
    except CheckpointError:
      if exc_type is None:
        raise
      # The run is already failing with its own error (which may be this save's, found
      # first by check_saves): that one is reported.
    return False


def abstract_like(tree, sharding):
  """ShapeDtypeStructs of `tree`, each with `sharding`: the target for `restore`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


# Trees of arrays without a training state: the `variables` of a weights directory (the
# format is rs.weights's).

def save_tree(path: str, tree) -> None:
  """Writes `tree` (arrays on any devices) as an orbax checkpoint at `path`, replacing one."""
  _plain_cpu_transfers()
  path = rundir.path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as saver:
    saver.save(path, tree, force=True)


def tree_metadata(path: str):
  """The saved tree's shapes and dtypes (jax.ShapeDtypeStruct leaves), from the files alone."""
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(rundir.path(path))
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)


def restore_tree(path: str, sharding: jax.sharding.Sharding):
  """The tree saved at `path`, every array placed on `sharding`.

  The target is built from the files' metadata, not from the devices that saved it: a run's
  checkpoint names its mesh (e.g. 8 devices), which orbax refuses to restore onto other
  devices without a target.
  """
  with ocp.StandardCheckpointer() as loader:
    return loader.restore(rundir.path(path),
                          abstract_like(tree_metadata(path), sharding))
