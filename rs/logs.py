"""What rs's commands show in their logs: rs's own lines, and of its libraries' only what matters."""
import logging


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
