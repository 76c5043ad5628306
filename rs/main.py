"""Train ResNet-RS: `python -m rs.main --config=configs/NAME.py --workdir=DIR_OR_GCS`.

Flags only; the work is in rs.train, which a notebook can import too. Run the same command
again with the same workdir to resume from its latest checkpoint. A config, dataset or workdir
that cannot work (rs.validate) ends the run before it starts with one line, `error: ...`, on
stderr and exit status 1; the workdir is left as it was.
"""
import logging
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from rs import cli


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard logs and config.json go.')
  flags.DEFINE_bool('distributed', None, 'Call jax.distributed.initialize() first (multi-host). '
                    'Default: yes on Cloud TPU VMs.')
  flags.DEFINE_integer('cpu_devices', 1, 'On a CPU, split each batch over this many devices: '
                       'one per core keeps every core busy (XLA:CPU runs most of a step on one '
                       'core; docs/performance.md). BatchNorm statistics are then per device, '
                       'as on TPU cores. No effect on TPU or GPU runs.', lower_bound=1)
  flags.mark_flags_as_required(['config', 'workdir'])


def on_cloud_tpu_vm() -> bool:
  """TPU chips show up as /dev/accel* (v2-v4) or /dev/vfio (v5 and later)."""
  return os.path.exists('/dev/accel0') or os.path.exists('/dev/vfio')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from rs import logs, sharding
  sharding.request_cpu_devices(flags.FLAGS.cpu_devices)  # before JAX starts its backends
  logs.quiet_library_logs()
  # TensorFlow only feeds data here: imported first and quietly (its import prints C++ log
  # lines), and kept off any accelerator JAX wants.
  tf = logs.import_tensorflow_quietly()
  tf.config.set_visible_devices([], 'GPU')
  from rs import train
  distributed = flags.FLAGS.distributed
  if distributed is None:
    distributed = on_cloud_tpu_vm()
  if distributed and not jax.distributed.is_initialized():
    # Before any JAX computation. Multi-host pods need it; orbax's preemption notices too.
    jax.distributed.initialize()
  logging.info('JAX %s on %s: %d devices, %d hosts.', jax.__version__, jax.default_backend(),
               jax.device_count(), jax.process_count())
  # What the user must fix - a config, data or workdir (found before anything is written), a
  # diverged run, unreadable checkpoints - is a UserError, which rs.cli prints in one line.
  train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
