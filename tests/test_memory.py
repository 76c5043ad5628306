"""The pre-flight memory check: XLA's analysis of a compiled program against a device limit."""
import jax
import jax.numpy as jnp
import pytest

from rs import memory


def test_step_bytes_counts_arguments_outputs_and_donation():
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)  # 4 MiB
  plain = jax.jit(lambda a: a * 2).lower(x).compile()
  donated = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
  assert memory.step_bytes(plain) >= 8 * 2**20  # argument + separate output
  assert memory.step_bytes(donated) < memory.step_bytes(plain)  # the output reuses the input


def test_a_step_that_cannot_fit_is_a_clear_error():
  compiled = jax.jit(lambda a: a @ a).lower(jax.ShapeDtypeStruct((512, 512), jnp.float32)).compile()
  memory.check_fits(compiled, 'The train step', None)  # unknown limit (CPU): only logged
  memory.check_fits(compiled, 'The train step', 2**30)
  with pytest.raises(MemoryError, match=r'needs 0\.\d\d GiB per device but the device holds '
                                         r'0\.00 GiB: lower --config\.batch_size, set '
                                         r'--config\.model\.remat=block'):
    memory.check_fits(compiled, 'The train step', 1024)
