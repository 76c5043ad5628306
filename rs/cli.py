"""How every rs command starts and ends.

  if __name__ == '__main__':
    define_flags()
    cli.run(main)

`run` is absl's app.run with one rule for everything the user can fix: a bad flag, a config
file that is missing, does not parse or has no get_config(), a misspelled config field, a
rs.errors.UserError raised anywhere in the command. Each ends the command with one line on
stderr, `error: ...`, naming the fix (the closest field name for a misspelling), and exit
status 1, with no traceback. Ctrl-C ends it with one line too (status 130). Any other exception
is a bug and keeps its traceback.

Config fields can also be set to None from the command line (`--config.train_steps=None`), to
switch a steps-based config back to epochs, which ml_collections' typed overrides refuse.
"""
import difflib
import importlib.util
import os
import re
import sys

import ml_collections
from absl import app, flags
from ml_collections.config_flags import config_flags  # the module: is_config_flag is not re-exported

from rs.errors import UserError, one_line

INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


def define_distributed_flag() -> None:
  """--distributed and its timeouts, for the commands that run on every host of a pod
  (start_jax, rs.distributed)."""
  flags.DEFINE_bool('distributed', None, 'Call jax.distributed.initialize() first (multi-host). '
                    'Default: yes on Cloud TPU VMs and where JAX_COORDINATOR_ADDRESS, '
                    'JAX_NUM_PROCESSES and JAX_PROCESS_ID name the hosts (launch/).')
  flags.DEFINE_float('init_timeout', 300, 'Multi-host: seconds for every host to join, '
                     'then stop with one line.')
  flags.DEFINE_float('peer_timeout', 100, 'Multi-host: seconds after which a host that '
                     'stopped answering counts as lost, and the others stop with one line.')


def define_inference_cpu_devices_flag() -> None:
  """--cpu_devices of the commands that only run forward passes (rs.predict, rs.evaluate)."""
  flags.DEFINE_integer('cpu_devices', None, 'On a CPU, split each batch over this many devices; '
                       'default: one per core (XLA:CPU runs a forward pass faster split than on '
                       'one device: docs/performance.md). No effect on TPU or GPU.',
                       lower_bound=1)


def request_inference_devices(batch_size: int | None = None) -> None:
  """Before JAX starts: the CPU devices --cpu_devices asks for; by default one per core, or
  the most up to that which divide `batch_size` (a global batch must split evenly)."""
  from rs import sharding
  count = flags.FLAGS.cpu_devices
  if count is None:
    cores = sharding.cpu_cores()
    count = max(d for d in range(1, cores + 1) if not batch_size or batch_size % d == 0)
  sharding.request_cpu_devices(count)


def distributed_flags() -> dict:
  """start_jax's keyword arguments from the flags define_distributed_flag defines."""
  f = flags.FLAGS
  if f.init_timeout <= 0 or f.peer_timeout <= 0:
    raise UserError(f'--init_timeout={f.init_timeout:g}, --peer_timeout={f.peer_timeout:g}: '
                    'give seconds above 0')
  return dict(distributed=f.distributed, init_timeout=f.init_timeout,
              peer_timeout=f.peer_timeout)


def on_cloud_tpu_vm() -> bool:
  """TPU chips show up as /dev/accel* (v2-v4) or /dev/vfio (v5 and later)."""
  return os.path.exists('/dev/accel0') or os.path.exists('/dev/vfio')


def start_jax(distributed: bool | None = None, cpu_devices: int = 1, init_timeout: float = 300,
              peer_timeout: float = 100) -> None:
  """What a command that computes does first: `cpu_devices` CPU devices (before JAX starts its
  backends), library logs quieted, TensorFlow imported quietly and kept off any accelerator
  JAX wants (it only feeds data), jax.distributed initialised where asked (default: on Cloud
  TPU VMs, whose hosts each run the command, and where the environment names the hosts;
  rs.distributed), and one line naming the devices."""
  import logging

  import jax

  from rs import distributed as distributed_lib
  from rs import logs, sharding
  sharding.request_cpu_devices(cpu_devices)
  logs.quiet_library_logs()
  tf = logs.import_tensorflow_quietly()
  tf.config.set_visible_devices([], 'GPU')
  if distributed is None:
    distributed = on_cloud_tpu_vm() or distributed_lib.Cluster.from_environment().explicit
  if distributed and not jax.distributed.is_initialized():
    # Before any JAX computation. Multi-host pods need it; orbax's preemption notices too.
    distributed_lib.initialize(init_timeout, peer_timeout)
  # On a CPU the numbers depend on the core count (docs/performance.md): the log says it.
  cores = f', {sharding.cpu_cores()} CPU cores' if jax.default_backend() == 'cpu' else ''
  logging.info('JAX %s on %s: %d devices, %d hosts%s.', jax.__version__, jax.default_backend(),
               jax.device_count(), jax.process_count(), cores)


def fail(message: str):
  """Ends the command: `error: message` on stderr, exit status 1."""
  sys.exit(f'error: {message}')


def run(main) -> None:
  """Runs `main(argv)` as absl's app.run does, with rs's errors (see the module docstring)."""
  app.run(_reporting(main), flags_parser=parse_flags)


def _reporting(main):
  def reported(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as e:
      _exit_if_peer_lost(e)  # e.g. a failed save, its cause a lost host
      fail(one_line(e, limit=None))
    except Exception as e:  # a bug keeps its traceback, unless a host of the run was lost
      _exit_if_peer_lost(e)
      raise
    except KeyboardInterrupt:
      print('Stopped by Ctrl-C (nothing half-written is kept; run the same command again to '
            'go on).', file=sys.stderr)
      sys.exit(INTERRUPTED)
  return reported


def _exit_if_peer_lost(error: Exception) -> None:
  if 'jax' in sys.modules:  # only a command that started JAX can have lost a host
    from rs import distributed
    distributed.exit_if_peer_lost(error)


_OVERRIDE = re.compile(r'^--?(\w+)\.([\w.]+)(?:=(.*))?$')


def parse_flags(argv: list[str]) -> list[str]:
  """flags.FLAGS(argv), every mistake reported in one line; `--NAME.field=None` sets the config
  field to None."""
  # config_flags reads its overrides' names from sys.argv itself, so a misspelled field set to
  # None fails inside the parse too: it is explained from the whole command line.
  given = argv
  argv, nones = _take_none_overrides(argv)
  try:
    remaining = flags.FLAGS(argv)
  except Exception as e:  # flags.Error, and whatever a config file raises while it loads
    fail(explain_flag_error(e, given))
  for name in _config_flag_names():
    # A config file that cannot be read is not an error to absl: config_flags defers it to
    # the first use of the config, as a traceback.
    if type(flags.FLAGS[name].value).__name__ == '_ErrorConfig':
      _config_of(name, argv)  # fails, naming what is wrong with the file
  for name, field in nones:
    config = flags.FLAGS[name].value
    if field not in _fields(config):  # were config_flags to stop reading sys.argv
      fail(_unknown_field(name, field, config))
    *parents, last = field.split('.')
    for key in parents:
      config = config[key]
    config[last] = None
  return remaining


def _config_flag_names() -> set[str]:
  return {name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
          if config_flags.is_config_flag(flag)}


def _take_none_overrides(argv):
  """argv without `--NAME.field=None` of config flags, and those (NAME, field) pairs."""
  names, kept, nones = _config_flag_names(), [], []
  for arg in argv:
    match = _OVERRIDE.match(arg)
    # Only Python's spelling: 'none' is a value of some fields (model.remat=none).
    if match and match[1] in names and match[3] == 'None':
      nones.append((match[1], match[2]))
    else:
      kept.append(arg)
  return kept, nones


def _flag_value(name: str, argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config_file(argument: str) -> ml_collections.ConfigDict:
  """The config a config-file flag's value (`path.py` or `path.py:arg`) gives; UserError naming
  what is wrong with the file."""
  path, *args = argument.split(':', 1)
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or '.'
    near = difflib.get_close_matches(os.path.basename(path), os.listdir(folder), n=3) \
        if os.path.isdir(folder) else []
    hint = f'; did you mean {" or ".join(os.path.join(folder, n) for n in near)}?' if near else ''
    raise UserError(f'config file {path} does not exist{hint}')
  spec = importlib.util.spec_from_file_location('rs_user_config', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f'config file {path}, line {e.lineno}: {e.msg}') from None
  except Exception as e:  # pylint: disable=broad-except (the file's own code failed)
    raise UserError(f'config file {path} fails to load: {type(e).__name__}: '
                    f'{one_line(e)}') from None
  if not callable(getattr(module, 'get_config', None)):
    raise UserError(f'config file {path} defines no get_config(): a config file returns its '
                    'ConfigDict from get_config() (see configs/base.py)')
  try:
    return module.get_config(*args)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'config file {path}: get_config() failed: {type(e).__name__}: '
                    f'{one_line(e)}') from None


def _config_of(name: str, argv: list[str]):
  argument = _flag_value(name, argv)
  if argument is None:
    return None
  try:
    return load_config_file(argument)
  except UserError as e:
    fail(str(e))  # names the file


def _fields(config, prefix: str = '') -> list[str]:
  """Every field's dotted path, sub-configs included."""
  paths = []
  for key, value in config.items():
    paths.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      paths += _fields(value, f'{prefix}{key}.')
  return paths


def _unknown_field(name: str, field: str, config) -> str:
  close = difflib.get_close_matches(field, _fields(config), n=1, cutoff=0.6)
  if not close:  # a misspelled leaf under the right parent: match the leaf alone
    leaves = {path.rsplit('.', 1)[-1]: path for path in _fields(config)}
    close = [leaves[m] for m in difflib.get_close_matches(field.rsplit('.', 1)[-1], leaves, n=1)]
  hint = f'; did you mean --{name}.{close[0]}?' if close else ''
  return f'--{name}.{field}: the config has no field {field}{hint}'


def explain_flag_error(error: Exception, argv: list[str]) -> str:
  """One line saying which flag is wrong and how to fix it."""
  for name in _config_flag_names():
    overrides = [m for m in map(_OVERRIDE.match, argv) if m and m[1] == name]
    if _flag_value(name, argv) is None:
      if overrides:
        return f'--{name}.{overrides[0][2]} given without --{name}=FILE'
      continue
    config = _config_of(name, argv)  # fails with the file's own problem
    for match in overrides:
      if match[2] not in _fields(config):
        return _unknown_field(name, match[2], config)
  text = one_line(error, limit=None).removeprefix('flag ')
  if 'Unknown command line flag' in text:
    text += ' (--helpfull lists the flags)'
  return text
