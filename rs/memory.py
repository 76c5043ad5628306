"""Will the compiled step fit? XLA's memory analysis against the device's memory, before step 1."""
import logging
import os
from typing import Callable

import jax

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


# A container's memory cgroup (v2, then v1): its limit, its use, and in its statistics the file
# cache it can drop under pressure, which its use counts but which is not held.
CGROUPS = (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current',
            '/sys/fs/cgroup/memory.stat', 'inactive_file'),
           ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
            '/sys/fs/cgroup/memory/memory.usage_in_bytes',
            '/sys/fs/cgroup/memory/memory.stat', 'total_inactive_file'))


def _read_int(path: str, key: str | None = None) -> int | None:
  """The number a kernel file holds, or (given `key`) the first number on its line starting
  with `key`; None if absent or not a number ('max')."""
  try:
    with open(path) as f:
      lines = [line.split() for line in f]
  except OSError:
    return None
  if key is None:
    fields = lines[0] if lines else []
  else:
    fields = next((line[1:] for line in lines if line and line[0] == key), [])
  return int(fields[0]) if fields and fields[0].isdigit() else None


def host_memory_bytes() -> int:
  """The memory this process's host gives it: the physical memory, or a container's limit
  (cgroup v2 or v1) where that is lower."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  limits = [_read_int(limit_path) for limit_path, *_ in CGROUPS]
  return min([total, *(limit for limit in limits if limit is not None)])


def available_host_bytes() -> int:
  """The memory the host can still give this process: the kernel's MemAvailable (free memory
  and the caches it can drop), or what is left under a container's limit where that is less."""
  available = _read_int('/proc/meminfo', 'MemAvailable:')
  available = host_memory_bytes() if available is None else available * 1024  # kB
  for limit_path, usage_path, stat_path, cache_key in CGROUPS:
    limit, usage = _read_int(limit_path), _read_int(usage_path)
    if limit is not None and usage is not None:
      held = usage - (_read_int(stat_path, cache_key) or 0)
      available = min(available, max(limit - held, 0))
  return available


# The part of the host's available memory a CPU run's steps may plan to use: the rest is for
# what XLA's analysis of the step does not see (the runtime's own buffers, the input pipeline's
# batches in flight). configs/tiny.py at 1,024 px on 8 devices of a 23.5 GiB host, ~13.9 GiB
# available at the check: the process peaked 1.2-1.4 GiB above its resident memory there plus
# 8 x (step - arguments) (batch 64 with block remat, 1.29 GiB per device; batch 48 without,
# 1.49 GiB: 22.3 GiB resident at its peak, and it finished).
CPU_STEP_SHARE = 0.85


def device_limit(device: jax.Device, sharing: int = 1, held: int = 0) -> int | None:
  """Bytes the device can hold: its own memory (TPU/GPU), or for a CPU device its share of the
  host's memory, which the `sharing` CPU devices of a run split (each holds its own copy of the
  state and its own activations). A CPU device's share is of what the host has left now (the
  process's held dataset, runtimes and other processes are already counted; CPU_STEP_SHARE of
  it), plus `held`: the bytes per device of the step's arguments, already resident but counted
  in its need. None where the backend says nothing."""
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return stats['bytes_limit']
  if device.platform == 'cpu':
    return int(available_host_bytes() * CPU_STEP_SHARE) // sharing + held
  return None


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


def argument_bytes(compiled) -> int:
  """Bytes per device of a compiled program's arguments (0 where the backend gives no analysis):
  for the train step, the state and the batch, which are resident before it runs."""
  m = compiled.memory_analysis()
  return 0 if m is None else m.argument_size_in_bytes


def remat_advice(model) -> str:
  """What rematerialisation could still save for `model`'s step, as a fix to name: '' for a
  network without it (EfficientNet) or one that already recomputes all it can."""
  from rs.models import layers  # the networks (Flax): only where a model is given
  if model is None or not hasattr(model, 'remat'):
    return ''
  if layers.remat_of(model) == 'none':
    return 'set --config.model.remat=block (recompute in the backward pass)'
  if model.remat_policy != 'nothing':
    return 'set --config.model.remat_policy=nothing (recompute the convolutions too)'
  return ''


def check_fits(compiled, name: str, limit: int | None, batch: int | None = None,
               devices: int = 1, bytes_at: Callable[[int], int] | None = None,
               model=None) -> None:
  """Logs the step's memory; raises DoesNotFit (a MemoryError; one line from rs's commands)
  naming fixes if it cannot fit. Given the per-device `batch`, the number of `devices` and
  `bytes_at` (see largest_batch), the error names the largest --config.batch_size found to fit;
  given the `model`, what its remat settings could still save."""
  need = step_bytes(compiled)
  if need is None:
    return
  logging.info('%s needs %.2f GiB per device%s.', name, need / GIB,
               f' of {limit / GIB:.2f} GiB' if limit else '')
  if limit and need > limit:
    fixes = ['lower --config.batch_size']
    if batch and bytes_at:
      logging.info('Compiling the step for smaller batches to find one that fits.')
      fits = largest_batch(bytes_at, batch, need, limit)
      fixes = [f'set --config.batch_size={fits * devices} or lower ({fits} per device fits, '
               f'{batch} does not)' if fits else
               'lower --config.batch_size (not even 1 example per device fits)']
    fixes += [remat_advice(model), 'use --config.dtype=bfloat16', 'or use more devices']
    raise DoesNotFit(
        f'{name} needs {need / GIB:.2f} GiB per device but the device holds {limit / GIB:.2f} '
        f'GiB: {", ".join(fix for fix in fixes if fix)}')
