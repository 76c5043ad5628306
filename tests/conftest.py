"""Test setup: 8 fake CPU devices (set before JAX starts) and a tiny Fashion-MNIST config."""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Many tests compile the same programs (the same tiny model in several runs): a compilation
# cache for the session compiles each once.
jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='rs-test-jax-cache-'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

# torchvision (timm's dependency, for the parity tests) segfaults when it is imported after
# TensorFlow in one process (torch 2.14.1 / torchvision 0.29.1 / tensorflow-cpu 2.21.0); the
# other order works, so it goes first.
try:
  import torchvision  # noqa: F401,E402
except ImportError:
  pass


def tiny_config(**overrides):
  """configs/tiny.py (the embedded default shrunk to seconds), with top-level overrides."""
  from configs import tiny
  c = tiny.get_config()
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config
