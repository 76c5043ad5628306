"""Errors the user can fix, and their one-line form: what every rs command prints instead of a
traceback (rs.cli)."""


class UserError(Exception):
  """Something the user must change (a flag, config value, dataset, workdir, weights file):
  the message names the cause and the fix. Every rs command prints it as one line,
  `error: ...`, and exits with status 1 (rs.cli.run); any other exception is a bug and keeps
  its traceback."""


class ConfigError(UserError, ValueError):
  """A bad config or flag value, dataset or workdir, found before the run starts
  (rs.validate)."""


def one_line(error: BaseException, limit: int | None = 200) -> str:
  """`error`'s message on one line (whitespace runs collapsed), cut to `limit` characters;
  its type's name when it has no message."""
  text = ' '.join(str(error).split())
  return (text[:limit] if limit else text) or type(error).__name__


class DoesNotFit(UserError, MemoryError):
  """A compiled step needs more memory than the device holds (rs.memory.check_fits): found
  before step 1, with the fixes named."""
