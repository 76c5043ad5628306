"""One-line error messages: what every rs command prints instead of a traceback."""


def one_line(error: BaseException, limit: int | None = 200) -> str:
  """`error`'s message on one line (whitespace runs collapsed), cut to `limit` characters;
  its type's name when it has no message."""
  text = ' '.join(str(error).split())
  return (text[:limit] if limit else text) or type(error).__name__
