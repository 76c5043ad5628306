"""The files of a run directory (a workdir; local or gs://):

  config.json      the resolved config (rs.train writes it when a run starts)
  model.json       what the run trains and how it evaluates: rs.weights's description,
                   written and read by rs.weights (write_description, read)
  eval.json        every evaluation, for tools that compare finished runs
  lock             who is training in the workdir now (`Lock`): one writer per workdir
  checkpoints/     orbax checkpoints of the whole training state (rs.checkpoint)
  tb/              TensorBoard event files (rs.metrics)

config.json and eval.json have their one writer and one reader here. All paths go through
etils.epath (`path`), the one filesystem layer of rs.
"""
import datetime
import json
import logging
import os
import socket
import time
import uuid

import jax
import ml_collections
from etils import epath

from rs.errors import UserError

CONFIG_FILE = 'config.json'
EVAL_FILE = 'eval.json'
LOCK_FILE = 'lock'


def path(workdir: str) -> epath.Path:
  """The workdir as an epath.Path; local paths made absolute (orbax refuses relative ones)."""
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))


def checkpoints(workdir: str) -> str:
  return str(path(workdir) / 'checkpoints')


def write_config(workdir: str, config) -> None:
  """config.json: the resolved config, so a run states exactly what it ran (process 0)."""
  if jax.process_index() == 0:
    path(workdir).mkdir(parents=True, exist_ok=True)
    (path(workdir) / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2,
                                                                        sort_keys=True))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config.json; FileNotFoundError when the workdir has none (not a run), ValueError
  when it is not JSON."""
  file = path(workdir) / CONFIG_FILE
  if not file.exists():
    raise FileNotFoundError(f'{file} does not exist: not a run directory written by rs.main')
  try:
    return ml_collections.ConfigDict(json.loads(file.read_text()))
  except ValueError as e:
    raise ValueError(f'{file} is not a run config ({e})') from None


def has_checkpoint(workdir: str) -> bool:
  """A finished orbax save: workdir/checkpoints/<step> (unfinished ones carry a suffix)."""
  directory = epath.Path(checkpoints(workdir))
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def read_evals(workdir: str) -> list[dict]:
  """The evaluations a run has written (write_eval), oldest first; [] if none."""
  file = path(workdir) / EVAL_FILE
  return json.loads(file.read_text()) if file.exists() else []


def write_eval(workdir: str, step: int, epoch: float, result: dict[str, float]) -> None:
  """Adds one evaluation to eval.json (a JSON list, rewritten whole: GCS has no appends), for
  tools that compare finished runs (rs.tools.pareto). A re-run of a step replaces it."""
  if jax.process_index() != 0:
    return
  evals = [e for e in read_evals(workdir) if e['step'] != step]
  evals.append({'step': step, 'epoch': epoch, **result})
  (path(workdir) / EVAL_FILE).write_text(json.dumps(sorted(evals, key=lambda e: e['step']),
                                                    indent=1))


class NewWorkdir:
  """Context manager: a workdir this run creates is removed again if the run fails before
  `keep()` (called when training starts): what it holds then is no work, only config.json,
  model.json and empty logs, and a failed start (data that does not decode, a step that does
  not fit the device) should leave the disk as it was. An existing workdir is never touched."""

  def __init__(self, workdir: str):
    self.path = path(workdir)
    self.created = jax.process_index() == 0 and not self.path.exists()

  def keep(self) -> None:
    self.created = False

  def __enter__(self) -> 'NewWorkdir':
    return self

  def __exit__(self, exc_type, exc, traceback) -> bool:
    if exc_type is not None and self.created and self.path.exists():
      logging.info('Removing %s: the run failed before it trained (nothing in it is work).',
                   self.path)
      self.path.rmtree()
    return False


class WorkdirInUse(UserError):
  """Another run is training in the workdir."""


class Lock:
  """One writer per workdir: `workdir/lock` names the run training there (host, pid, start
  time) while it runs. A second run on the workdir refuses to start, naming the first.

  Local workdirs: the file is created exclusively (O_EXCL), so of two runs starting together
  exactly one gets it. gs:// has no exclusive create through epath: the run writes its own
  token, waits `settle_s` and reads the file back; of two runs that raced, the one whose
  token was overwritten refuses (the last writer wins, and both see the same winner).

  A lock left by a run that is gone is taken over with a warning: on the same host when its
  pid no longer exists, from any host when its heartbeat (`beat`, at every log point) is older
  than `stale_after_s`. Only process 0 of a multi-host run takes the lock.
  """

  def __init__(self, workdir: str, stale_after_s: float = 900.0, settle_s: float = 2.0,
               exclusive_create: bool | None = None):
    """`exclusive_create`: O_EXCL (default for local paths) or write-and-read-back (gs://)."""
    self.file = path(workdir) / LOCK_FILE
    self.exclusive_create = ('://' not in workdir if exclusive_create is None
                             else exclusive_create)
    self.stale_after_s = stale_after_s
    self.settle_s = settle_s
    self.owner = {'host': socket.gethostname(), 'pid': os.getpid(),
                  'started': datetime.datetime.now().isoformat(timespec='seconds'),
                  'token': uuid.uuid4().hex}
    self.held = False

  def acquire(self) -> None:
    if jax.process_index() != 0:
      return
    self.file.parent.mkdir(parents=True, exist_ok=True)
    holder = self._read()
    if holder is not None:
      if not self._gone(holder):
        raise self._in_use(holder)
      logging.warning('Taking over the workdir lock of a run that is gone (host %s, pid %s, '
                      'started %s).', holder.get('host'), holder.get('pid'),
                      holder.get('started'))
      self.file.unlink(missing_ok=True)
    if not self.exclusive_create:
      self._write()
      time.sleep(self.settle_s)  # a racing run writes meanwhile: the file shows who won
      holder = self._read()
      if holder is None or holder.get('token') != self.owner['token']:
        raise self._in_use(holder or {})
    else:
      try:
        fd = os.open(str(self.file), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:  # another run started in between
        raise self._in_use(self._read() or {}) from None
      with os.fdopen(fd, 'w') as file:
        file.write(json.dumps(self.owner))
    self.held = True

  def beat(self) -> None:
    """Shows the run is alive (the lock's modification time), for other hosts' stale check."""
    if self.held:
      self._write()

  def release(self) -> None:
    if self.held:
      holder = self._read()
      if holder is not None and holder.get('token') == self.owner['token']:
        self.file.unlink(missing_ok=True)
      self.held = False

  def __enter__(self) -> 'Lock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> bool:
    self.release()
    return False

  def _write(self) -> None:
    self.file.write_text(json.dumps(self.owner))

  def _read(self) -> dict | None:
    try:
      return json.loads(self.file.read_text())
    except FileNotFoundError:
      return None
    except ValueError:  # half-written or damaged: nobody can be named; treat as gone
      return {}

  def _gone(self, holder: dict) -> bool:
    if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
      try:
        os.kill(holder['pid'], 0)
      except ProcessLookupError:
        return True
      except PermissionError:  # alive, another user's
        return False
      return False
    try:
      age = time.time() - self.file.stat().mtime
    except FileNotFoundError:
      return True
    return not holder or age > self.stale_after_s

  def _in_use(self, holder: dict) -> WorkdirInUse:
    return WorkdirInUse(
        f'{self.file.parent} is in use by another run (host {holder.get("host", "?")}, pid '
        f'{holder.get("pid", "?")}, started {holder.get("started", "?")}): wait for it to '
        f'end or use another --workdir; if that run is gone, delete {self.file}')
