"""Will the compiled step fit? XLA's memory analysis against the device's memory, before step 1."""
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp

from rs.errors import DoesNotFit

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


def largest_batch(bytes_at: Callable[[int], int], batch: int, need: int, limit: int,
                  compilations: int = 4) -> int:
  """The largest per-device batch below `batch` (which needs `need` bytes) found to fit
  `limit`, by compiling: `bytes_at(n)` compiles the step for a per-device batch of n and
  returns its bytes. XLA's temporaries grow with the batch in steps, on top of a part that does
  not grow (the state, gradients, optimizer temporaries), so no formula from one compilation is
  safe. Halving finds a batch that fits; a line through the nearest sizes that do and do not fit
  then guesses closer, in at most `compilations` more compilations. The answer was compiled and
  fits; 0 where even a batch of 1 does not."""
  fits, fit_need, over, over_need = 0, None, batch, need
  while fit_need is None and over > 1:  # halve until one fits
    half = over // 2
    half_need = bytes_at(half)
    if half_need <= limit:
      fits, fit_need = half, half_need
    else:
      over, over_need = half, half_need
  for _ in range(compilations if fit_need is not None else 0):
    # Between the two, on the line through them.
    guess = fits + (over - fits) * (limit - fit_need) // (over_need - fit_need)
    guess = min(max(guess, fits + 1), over - 1)
    if guess <= fits:
      break
    guess_need = bytes_at(guess)
    if guess_need <= limit:
      fits, fit_need = guess, guess_need
    else:
      over, over_need = guess, guess_need
  return fits


def check_fits(compiled, name: str, limit: int | None, batch: int | None = None,
               devices: int = 1, bytes_at: Callable[[int], int] | None = None) -> None:
  """Logs the step's memory; raises DoesNotFit (a MemoryError; one line from rs's commands)
  naming fixes if it cannot fit. Given the per-device `batch`, the number of `devices` and
  `bytes_at` (see largest_batch), the error names the largest --config.batch_size found to fit."""
  need = step_bytes(compiled)
  if need is None:
    return
  logging.info('%s needs %.2f GiB per device%s.', name, need / GIB,
               f' of {limit / GIB:.2f} GiB' if limit else '')
  if limit and need > limit:
    smaller = 'lower --config.batch_size'
    if batch and bytes_at:
      logging.info('Compiling the step for smaller batches to find one that fits.')
      fits = largest_batch(bytes_at, batch, need, limit)
      smaller = (f'set --config.batch_size={fits * devices} or lower ({fits} per device fits, '
                 f'{batch} does not)' if fits else
                 'lower --config.batch_size (not even 1 example per device fits)')
    raise DoesNotFit(
        f'{name} needs {need / GIB:.2f} GiB per device but the device holds {limit / GIB:.2f} '
        f'GiB: {smaller}, set --config.model.remat=block (ResNets: recompute in the backward '
        'pass; stage saves more), use --config.dtype=bfloat16, or use more devices')


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
