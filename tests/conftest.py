"""Test setup: 8 fake CPU devices (set before JAX starts) and a tiny Fashion-MNIST config."""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Many tests compile the same programs (the same tiny model in several runs): one compilation
# cache for the whole test run compiles each once. pytest loads this file in the controller
# before pytest-xdist starts its workers, which inherit the variable: all share the cache.
os.environ.setdefault('RS_TEST_JAX_CACHE', tempfile.mkdtemp(prefix='rs-test-jax-cache-'))
jax.config.update('jax_compilation_cache_dir', os.environ['RS_TEST_JAX_CACHE'])
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


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """(workdir, final evaluation) of configs/tiny.py trained on the 8 devices: 6 steps,
  checkpoints at steps 3 and 6. Trained once per test process and shared: tests that change
  the workdir copy it first (shutil.copytree)."""
  from rs import train
  workdir = str(tmp_path_factory.mktemp('tiny_run'))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


# The longest tests (over ~40 s each on the 2-core CI machine, `--durations` in README's test
# command), started first: pytest-xdist hands tests out in collection order, and one of these
# starting last would leave the other worker idle while it runs.
LONGEST_FIRST = ('test_preemption.py', 'test_notebook.py', 'test_multihost.py', 'test_sweep.py',
                 'test_sources_e2e.py', 'test_export.py', 'test_convert.py', 'test_benchmark.py')


def pytest_collection_modifyitems(items):
  rank = lambda item: next((i for i, name in enumerate(LONGEST_FIRST)
                            if item.nodeid.startswith(f'tests/{name}')), len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: each file keeps its own order
