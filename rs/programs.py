"""The programs a run compiles: the config's network, its state and one jax.jit per step.

Kept apart from rs.train (the loop, input, checkpoints) and free of TensorFlow, so that
rs.tools.benchmark times exactly the training programs next to PyTorch in one process.
"""
import functools
from typing import Any, Callable, NamedTuple

import jax
import ml_collections

from rs import memory, optim, sharding, step as step_lib
from rs.data import pseudo
from rs.models import DTYPES, architecture, create_model, layers
from rs.state import create_state


def step_rows(config: ml_collections.ConfigDict) -> int:
  """Images per global training step: the labeled batch and any pseudo-labeled rows."""
  return config.batch_size + pseudo.pseudo_rows(config)


def build_model(config: ml_collections.ConfigDict, num_classes: int, num_devices: int = 1):
  """The config's network: the registered model with the config's overrides.

  `model.bn_group_size` None means the per-device batch (the step's rows / num_devices: the
  labeled and any pseudo-labeled ones), the BN batch of the official per-core TPU training.
  With `optimizer.freeze_bn_statistics`, the BN layers whose parameters
  `optimizer.param_groups` freezes keep their statistics too.
  """
  if config.dtype not in DTYPES:
    raise ValueError(f'dtype={config.dtype!r}: use one of {sorted(DTYPES)}')
  overrides = {k: v for k, v in config.model.items() if k != 'name' and v is not None}
  overrides.setdefault('bn_group_size', step_rows(config) // num_devices)
  model = create_model(config.model.name, num_classes=num_classes,
                       dtype=DTYPES[config.dtype], **overrides)
  if config.optimizer.get('freeze_bn_statistics') and config.optimizer.get('param_groups'):
    model = model.clone(fixed_bn_statistics=frozen_batch_norms(model, config.optimizer))
  return model


def frozen_batch_norms(model, opt_config) -> frozenset:
  """Paths of the BN layers ('stage1_block1/conv1/bn') whose scale and bias are both frozen."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          architecture.example_input(model))
  frozen = optim.frozen_mask(shapes['params'], opt_config)
  layers = {}
  for path, is_frozen in jax.tree_util.tree_flatten_with_path(frozen)[0]:
    names = [k.key for k in path]
    if names[-1] in ('scale', 'bias') and optim.is_batch_norm(path):
      layers.setdefault('/'.join(names[:-1]), []).append(is_frozen)
  return frozenset(layer for layer, flags in layers.items() if all(flags))


class Training(NamedTuple):
  """What a run compiles: the network, the state's initialiser and sharding, the jitted steps."""
  model: Any
  init: Callable  # rng -> TrainState (jit it with out_shardings=state_sharding)
  state_sharding: jax.sharding.NamedSharding
  train_fn: Callable  # (state, global batch) -> (state, metrics); the state is donated
  eval_fn: Callable  # ({'params', 'batch_stats'}, global batch) -> sums (rs.step.eval_step)


def build_training(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, num_classes: int,
                   image_shape: tuple[int, ...], schedule) -> Training:
  """The model, optimizer and one jax.jit program per step, with explicit shardings on `mesh`:
  the state replicated, the batch split over the 'data' axis. The train step donates the
  state, so its buffers are updated in place. rs.tools.benchmark times exactly these programs."""
  model = build_model(config, num_classes, mesh.size)
  tx = optim.create_optimizer(config.optimizer, schedule)
  state_sharding = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  train_fn = jax.jit(
      functools.partial(step_lib.train_step, model=model, tx=tx, schedule=schedule, config=config),
      in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, state_sharding),
      donate_argnums=(0,), compiler_options=train_compiler_options(model))
  eval_fn = build_eval(model, config.data.mean, config.data.std, mesh)
  init = functools.partial(create_state, model=model, tx=tx, image_shape=image_shape)
  return Training(model, init, state_sharding, train_fn, eval_fn)


# XLA:CPU's pass that removes optimisation barriers before common-subexpression elimination.
CPU_BARRIER_EXPANDER = 'cse_barrier_expander'


def train_compiler_options(model) -> dict[str, str] | None:
  """XLA options for the train step of `model`: on a CPU, a network with remat
  (`model.remat`) keeps the optimisation barriers that jax.checkpoint puts around the backward
  pass's recomputation. XLA:CPU removes them before it merges equal computations, so the
  recomputed convolutions would become the forward's again: remat would then keep every
  activation and save nothing (a 16-layer chain: the same 47 dots and 256 MiB of temporaries
  with and without remat; with the pass off, 62 dots and 136 MiB). Accelerators keep the
  barriers. None elsewhere (the program is XLA's default)."""
  if jax.default_backend() != 'cpu' or layers.remat_of(model) == 'none':
    return None
  return {'xla_disable_hlo_passes': CPU_BARRIER_EXPANDER}


def build_eval(model, mean, std, mesh: jax.sharding.Mesh) -> Callable:
  """The evaluation program of the trainer and of rs.evaluate: one set of weights
  ({'params', 'batch_stats'}, replicated) and a global batch split over 'data' -> the sums of
  rs.step.eval_step. One compilation serves the raw and the EMA weights."""
  replicated = sharding.replicated(mesh)
  return jax.jit(functools.partial(step_lib.eval_step, model=model, mean=tuple(mean),
                                   std=tuple(std)),
                 in_shardings=(replicated, sharding.batch_sharded(mesh)),
                 out_shardings=replicated)


def train_step_bytes(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     num_classes: int, image_shape: tuple[int, ...], schedule,
                     example: dict) -> Callable[[int], int | None]:
  """What rs.memory.largest_batch searches with: per-device batch n -> the bytes per device
  (rs.memory.step_bytes) of the config's train step compiled with batch_size n x devices, on
  inputs shaped like the rows of `example` (a host batch). A BN group that does not divide the
  new batch becomes the per-device batch (a BN group's size changes nothing in memory)."""
  def bytes_at(per_device: int) -> int | None:
    resized = config.copy_and_resolve_references()
    resized.batch_size = per_device * mesh.size
    group = resized.model.get('bn_group_size')
    if group and resized.batch_size % group:
      resized.model.bn_group_size = None
    training = build_training(resized, mesh, num_classes, image_shape, schedule)
    state = jax.eval_shape(training.init, jax.random.key(0))
    inputs = {k: jax.ShapeDtypeStruct((step_rows(resized), *v.shape[1:]), v.dtype)
              for k, v in example.items()}
    return memory.step_bytes(training.train_fn.lower(state, inputs).compile())
  return bytes_at
