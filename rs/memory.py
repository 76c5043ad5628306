"""Will the compiled step fit? XLA's memory analysis against the device's memory, before step 1."""
import logging

import jax

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
        'GiB: lower --config.batch_size, use --config.dtype=bfloat16, or use more devices')
