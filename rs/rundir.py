"""The files of a run directory (a workdir; local or gs://):

  config.json      the resolved config (rs.train writes it when a run starts)
  model.json       what the run trains and how it evaluates: rs.weights's description,
                   written and read by rs.weights (write_description, read)
  eval.json        every evaluation, for tools that compare finished runs
  checkpoints/     orbax checkpoints of the whole training state (rs.checkpoint)
  tb/              TensorBoard event files (rs.metrics)

config.json and eval.json have their one writer and one reader here. All paths go through
etils.epath (`path`), the one filesystem layer of rs.
"""
import json
import os

import jax
import ml_collections
from etils import epath

CONFIG_FILE = 'config.json'
EVAL_FILE = 'eval.json'


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
