"""Will the compiled step fit? XLA's memory analysis against the device's memory, before step 1."""
import functools
import logging

import jax
import jax.numpy as jnp

GIB = 2**30


def step_bytes(compiled) -> int | None:
  """Peak bytes per device of a compiled program: arguments + outputs not aliased to them
  (donation) + temporaries + code; None where the backend gives no analysis."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes + m.generated_code_size_in_bytes)


def device_limit(device: jax.Device) -> int | None:
  """Bytes the device can hold (TPU/GPU); None where unknown (CPU)."""
  stats = device.memory_stats() or {}
  return stats.get('bytes_limit')


def check_fits(compiled, name: str, limit: int | None) -> None:
  """Logs the step's memory; raises a one-line MemoryError naming fixes if it cannot fit."""
  need = step_bytes(compiled)
  if need is None:
    return
  logging.info('%s needs %.2f GiB per device%s.', name, need / GIB,
               f' of {limit / GIB:.2f} GiB' if limit else '')
  if limit and need > limit:
    raise MemoryError(
        f'{name} needs {need / GIB:.2f} GiB per device but the device holds {limit / GIB:.2f} '
        'GiB: lower --config.batch_size, set --config.model.remat=block (ResNets: recompute '
        'in the backward pass; stage saves more), use --config.dtype=bfloat16, or use more '
        'devices')


def saved_activation_bytes(model, batch_shape: tuple[int, ...], dtype=jnp.float32) -> int:
  """Bytes of what a training forward of `model` on a batch of `batch_shape` keeps for its
  backward pass (autodiff's residuals: activations, or what model.remat keeps of them), without
  the parameters and the input. Traced on shapes only, with no compilation and no arrays:
  any batch size costs the same, 40-80 s for RS-350 or RS-420 on one CPU core.

  Backend-independent, and the way to see remat's effect on a CPU: XLA:CPU drops the
  optimisation barriers that keep a checkpoint's recomputation apart and merges it back into
  the forward, so its memory analysis is the same with and without remat (docs/performance.md).
  """
  from jax._src import ad_checkpoint  # saved_residuals: public only as print_saved_residuals
  images = jax.ShapeDtypeStruct(batch_shape, dtype)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             images)

  def forward(variables, images):
    logits, _ = model.apply(variables, images, train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(0)})
    return logits.astype(jnp.float32).sum()

  residuals = ad_checkpoint.saved_residuals(forward, variables, images)
  return sum(int(a.size) * a.dtype.itemsize for a, source in residuals
             if not source.startswith('from the argument'))
