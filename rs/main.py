"""Train ResNet-RS: `python -m rs.main --config=configs/NAME.py --workdir=DIR_OR_GCS`.

Flags only; the work is in rs.train, which a notebook can import too. Run the same command
again with the same workdir to resume from its latest checkpoint. A config, dataset or workdir
that cannot work (rs.validate) ends the run before it starts with one line, `error: ...`, on
stderr and exit status 1; the workdir is left as it was.
"""

from absl import app, flags
from ml_collections import config_flags

from rs import cli


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard logs and config.json go.')
  cli.define_distributed_flag()
  flags.DEFINE_integer('cpu_devices', 1, 'On a CPU, split each batch over this many devices: '
                       'one per core keeps every core busy (XLA:CPU runs most of a step on one '
                       'core; docs/performance.md). BatchNorm statistics are then per device, '
                       'as on TPU cores. No effect on TPU or GPU runs.', lower_bound=1)
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.start_jax(cpu_devices=flags.FLAGS.cpu_devices, **cli.distributed_flags())
  from rs import train
  # What the user must fix - a config, data or workdir (found before anything is written), a
  # diverged run, unreadable checkpoints - is a UserError, which rs.cli prints in one line.
  train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
