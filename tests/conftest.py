"""Test setup: 8 fake CPU devices (set before JAX starts) and a tiny Fashion-MNIST config."""
import os
import tempfile

# The tests' programs are tiny and each runs a few steps, so compiling them is most of their
# time. Measured on the tiny run's training step (8 devices, no cache, idle 2-core VM): XLA:CPU's
# defaults compile it in 8.2 s; LLVM's cheapest optimisation level in 5.6 s with bit-identical
# results (XLA's own HLO passes, which decide the numerics, still all run); and the older
# elemental emitters instead of the fusion emitters in 2.0-2.9 s, with the tiny run's losses equal
# to 7 digits and its 100-step run ~15% faster. Every test subprocess gets the same flags
# (process_env), so whatever a test compares was computed with them.
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0 '
                          '--xla_llvm_disable_expensive_passes=true '
                          '--xla_cpu_use_fusion_emitters=false')
# A step over several CPU devices meets at each collective, where XLA:CPU aborts after 40 s by
# default; under the full suite (8 devices per process, the other worker's commands and torch on
# the same 2 cores) a thread can wait that long. rs's commands wait longer (rs.sharding), and so
# do the tests, in this process and in every command they start. (The EfficientNet test's abort
# in its evaluation under the full suite was not a slow collective but a deadlock of concurrent
# programs, which no timeout cures: rs.sharding.one_program_at_a_time.)
PATIENT_COLLECTIVES_XLA_FLAGS = ('--xla_cpu_collective_call_warn_stuck_timeout_seconds=120 '
                                 '--xla_cpu_collective_call_terminate_timeout_seconds=600')
os.environ['XLA_FLAGS'] = (f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAGS} "
                           f'{PATIENT_COLLECTIVES_XLA_FLAGS} '
                           '--xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Many tests compile the same programs (the same tiny model in several runs and processes): one
# compilation cache for the whole test run compiles each once. pytest loads this file in the
# controller before pytest-xdist starts its workers, which inherit the variables, as do the
# commands the tests start: all share the cache.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='rs-test-jax-cache-'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
from unittest import mock  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision (timm's dependency, for the parity tests) segfaults when it is imported after
# TensorFlow in one process (torch 2.14.1 / torchvision 0.29.1 / tensorflow-cpu 2.21.0); the
# other order works, so it goes first.
try:
  import torchvision  # noqa: F401,E402
except ImportError:
  pass


def process_env(devices: int | None = None, drop: tuple[str, ...] = (), **extra: str) -> dict:
  """The environment of a command a test starts: this process's (the compilation cache and
  the fast-compiling XLA flags included), rs importable, and `devices` CPU devices instead of
  the tests' 8 (None: as many as the command makes itself, one unless told). `drop` removes
  variables, `extra` sets them."""
  env = {k: v for k, v in os.environ.items() if k not in drop}
  env['XLA_FLAGS'] = f'{FAST_COMPILE_XLA_FLAGS} {PATIENT_COLLECTIVES_XLA_FLAGS}' + (
      f' --xla_force_host_platform_device_count={devices}' if devices else '')
  env['PYTHONPATH'] = ROOT
  return env | extra


@dataclasses.dataclass
class CommandResult:
  status: int
  stdout: str
  stderr: str


def run_command(module_name: str, *args: str) -> CommandResult:
  """`python -m module_name args`, run in this process: the command's flags are defined,
  parsed and removed again, and its exit status, stdout and stderr come back as a process
  would show them (a `sys.exit('error: ...')` message is its stderr's last line, status 1).
  Saves a process start (~5 s of imports) per case."""
  from absl import app, flags
  from rs import cli
  module = importlib.import_module(module_name)
  app.define_help_flags()  # absl defines them once per process: they stay
  before = set(flags.FLAGS)
  module.define_flags()
  out, err = io.StringIO(), io.StringIO()
  status = 0
  try:
    # absl's --help shows the docstring of __main__ and the flags of the module named argv[0].
    # (Not mock.patch.dict(sys.modules): it would also drop every module imported meanwhile,
    # and importing TensorFlow a second time aborts the process.)
    with mock.patch.object(sys, 'argv', [module_name, *args]), \
         mock.patch.object(sys.modules['__main__'], '__doc__', module.__doc__), \
         contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      cli.run(module.main)
  except SystemExit as e:
    if isinstance(e.code, str):  # printed by the interpreter as it exits
      err.write(e.code + '\n')
      status = 1
    else:
      status = e.code or 0
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
      # ml_collections loads a config file as module NAME_config, executed into the module
      # already there: without this, a later file lacking get_config would find the last one's.
      sys.modules.pop(f'{name}_config', None)
    flags.FLAGS.unparse_flags()
  return CommandResult(status, out.getvalue(), err.getvalue())


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
LONGEST_FIRST = ('test_multihost.py', 'test_launch_tpu.py', 'test_preemption.py',
                 'test_launch_local.py', 'test_notebook.py', 'test_sweep.py',
                 'test_sources_e2e.py', 'test_export.py', 'test_convert.py', 'test_benchmark.py',
                 'test_video.py', 'test_transfer.py', 'test_video_sources.py',
                 'test_transfer_study.py')


def pytest_collection_modifyitems(items):
  rank = lambda item: next((i for i, name in enumerate(LONGEST_FIRST)
                            if item.nodeid.startswith(f'tests/{name}')), len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: each file keeps its own order
