"""What rs's commands show in their logs: rs's own lines, and of its libraries' only what matters."""
import logging
import os
import sys


class _LibraryFilter(logging.Filter):
  """Drops lines below `level` from libraries that log every file they write (orbax) or
  probe (jax, tfds), and their warnings about what rs does on purpose."""
  NOISY = ('/orbax/', '/jax/_src/xla_bridge.py', '/tensorflow_datasets/')
  EXPECTED = (
      # tfds, when rs reads Fashion-MNIST's original files where no tfds copy is prepared.
      'has no dataset_info.json',
      # orbax, when rs.checkpoint replaces its jax.Array handler on CPU (on purpose).
      'overriding jax.Array',
  )

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    if not any(n in record.pathname for n in self.NOISY):
      return True
    if any(text in record.getMessage() for text in self.EXPECTED):
      return False
    if record.exc_info and '/orbax/' in record.pathname:
      # orbax logs a failed save from each of its threads with a traceback (hundreds of
      # lines); rs.checkpoint reports the failure itself, in one line naming the fix.
      record.exc_info, record.exc_text = None, None
    return record.levelno >= self.level


def quiet_library_logs(level: int = logging.WARNING) -> None:
  """The one way rs quiets its libraries' logging: their lines below `level` are dropped.
  The trainer keeps library warnings (WARNING); commands whose output is a result line
  (rs.export, rs.predict) keep only their errors (ERROR). rs's own lines all stay."""
  quiet = _LibraryFilter(level)
  # On the 'absl' logger (orbax and tfds log through absl.logging) and on the root's handlers
  # (JAX logs through its own loggers, whose records only meet the handlers).
  logging.getLogger('absl').addFilter(quiet)
  for handler in logging.getLogger().handlers:
    handler.addFilter(quiet)


def quiet_failed_save_tasks() -> None:
  """After a failed save: asyncio's 'Task exception was never retrieved' for each array orbax
  left unwritten (logged as the process exits) is dropped; rs.checkpoint has reported the
  failure in one line."""
  logging.getLogger('asyncio').setLevel(logging.CRITICAL)


def drop_closed_loop_tracebacks() -> None:
  """Drops tensorstore's callbacks into the asyncio loop orbax closes when a save fails (one
  traceback per pending write, printed as the save fails, before rs notices it), whether they
  reach sys.excepthook or sys.unraisablehook. Installed by rs.checkpoint when it starts saving,
  after the libraries that may replace the hooks are imported; nothing else in rs raises that
  error."""
  closed = lambda kind, error: kind is RuntimeError and str(error) == 'Event loop is closed'
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
  if getattr(excepthook, 'drops_closed_loop', False):
    return

  def hook(kind, error, traceback):
    if not closed(kind, error):
      excepthook(kind, error, traceback)

  def unraisable(info):
    if not closed(info.exc_type, info.exc_value):
      unraisablehook(info)
  hook.drops_closed_loop = True
  sys.excepthook, sys.unraisablehook = hook, unraisable


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
