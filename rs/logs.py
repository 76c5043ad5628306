"""What rs's commands show in their logs: rs's own lines, and of its libraries' only what matters."""
import logging
import os
import sys


class _LibraryFilter(logging.Filter):
  """Drops lines below `level` from libraries that log every file they write (orbax) or
  probe (jax, tfds)."""
  NOISY = ('/orbax/', '/jax/_src/xla_bridge.py', '/tensorflow_datasets/')

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= self.level or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs(level: int = logging.WARNING) -> None:
  """The one way rs quiets its libraries' logging: their lines below `level` are dropped.
  The trainer keeps library warnings (WARNING); commands whose output is a result line
  (rs.export, rs.predict) keep only their errors (ERROR). rs's own lines all stay."""
  logging.getLogger('absl').addFilter(_LibraryFilter(level))


def import_tensorflow_quietly():
  """TensorFlow for a command whose output is a result (rs.predict), with its own logging
  quiet: its import logs four lines (oneDNN, absl's 'before InitializeLog') whatever
  TF_CPP_MIN_LOG_LEVEL says (TF 2.21), so stderr is closed meanwhile (an ImportError still
  shows, raised after stderr is back); its C++ log, which repeats each decoder failure, and
  its Python deprecation notices (resize_bicubic's) are kept to errors."""
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow as tf
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
  tf.get_logger().setLevel('ERROR')
  return tf
