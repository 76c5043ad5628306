"""Settings whose 'auto' depends on the backend: what is fastest on XLA:CPU is not on TPU/GPU."""
import jax


def resolve(field: str, value: str, choices: tuple[str, ...], on_cpu: str, elsewhere: str) -> str:
  """`value` of the config field `field`, one of `choices`; 'auto' is `on_cpu` on a CPU and
  `elsewhere` on accelerators. ValueError (one line, naming the choices) otherwise."""
  if value not in choices:
    raise ValueError(f'{field}={value!r}: use one of {choices}')
  if value == 'auto':
    return on_cpu if jax.default_backend() == 'cpu' else elsewhere
  return value
