"""The training state: one pytree holding everything a run needs to continue exactly."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # number of updates applied
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any  # exponential moving averages, used for the "ema" evaluation
  ema_batch_stats: Any
  rng: jax.Array  # raw key data (uint32); each step folds its own step number in
  # Steps whose loss or gradient was not finite: their update was not applied (rs.step).
  nonfinite_steps: jax.Array
  first_nonfinite_step: jax.Array  # the first such step, 0 if none


def path_name(path) -> str:
  """A leaf's tree path as 'params/stem1/conv/kernel': dict keys, attributes and indices joined
  by '/', the same for a TrainState and for the nested dicts orbax restores it as."""
  names = []
  for key in path:
    for attr in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
  return '/'.join(names)


def create_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                 image_shape: tuple[int, ...]) -> TrainState:
  """A fresh state; call it under jax.jit with out_shardings to create it sharded in place."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params, batch_stats = variables['params'], variables['batch_stats']
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats,
      rng=jax.random.key_data(state_rng), nonfinite_steps=jnp.zeros((), jnp.int32),
      first_nonfinite_step=jnp.zeros((), jnp.int32))
