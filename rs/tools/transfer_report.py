"""The tables of the transfer study (scripts/transfer_study.sh, docs/transfer.md) from its runs.

  python -m rs.tools.transfer_report --runs=runs/transfer

Reads the finished run directories the script names (those with its wall.txt):
- `up_RECIPE_seedS`: upstream pretraining (Fashion-MNIST test top-1, reported, never chosen on);
- `tune_RECIPE_DATASET_MODE_lrLR`: downstream runs scored on a minival slice: the learning rate
  with the best mean over the recipes is the choice;
- `RECIPE_DATASET_MODE_seedS`: the final downstream runs, scored once on the test splits;
  `scratch_DATASET_finetune_seedS`: the same training from random weights, for reference.
Prints markdown: top-1 as mean (range) over seeds, the RS recipe's difference, and whether it
exceeds the seed noise (the ranges do not overlap).
"""
import collections
import dataclasses
import json
import os
import re
import statistics

from absl import flags

from rs import cli

RECIPES = ('standard', 'rs')
_UPSTREAM = re.compile(r'up_(?P<recipe>[a-z]+)_seed(?P<seed>\d+)$')
_TUNE = re.compile(r'tune_(?P<recipe>[a-z]+)_(?P<dataset>\w+?)_(?P<mode>probe|finetune)'
                   r'_lr(?P<lr>[\d.e-]+)$')
_FINAL = re.compile(r'(?P<recipe>standard|rs|scratch)_(?P<dataset>\w+?)_(?P<mode>probe|finetune)'
                    r'_seed(?P<seed>\d+)$')


@dataclasses.dataclass
class Run:
  top1: float  # percent, the last evaluation
  wall_s: int


def read_run(path: str) -> Run | None:
  """The run's last evaluation and wall time; None until the script has marked it finished
  (its evaluations so far are not the result)."""
  try:
    with open(os.path.join(path, 'wall.txt')) as f:
      wall = int(f.read())
    with open(os.path.join(path, 'eval.json')) as f:
      last = json.load(f)[-1]
  except (OSError, ValueError, IndexError):
    return None
  return Run(100 * last.get('ema_top1', last['top1']), wall)


def collect(root: str) -> dict[str, dict]:
  """{'upstream' | 'tune' | 'final': {key: Run}} of the finished runs under `root`."""
  if not os.path.isdir(root):
    raise ValueError(f'--runs={root}: no such directory; run scripts/transfer_study.sh first')
  found = {'upstream': {}, 'tune': {}, 'final': {}}
  for name in sorted(os.listdir(root)):
    for kind, pattern in (('upstream', _UPSTREAM), ('tune', _TUNE), ('final', _FINAL)):
      match = pattern.match(name)
      run = match and read_run(os.path.join(root, name))
      if run:
        found[kind][tuple(match.groupdict().values())] = run
  if not any(found.values()):
    raise ValueError(f'--runs={root}: no finished study runs in it (up_*, tune_*, RECIPE_*)')
  return found


def spread(values: list[float]) -> str:
  return (f'{statistics.mean(values):.2f}% ({min(values):.2f}-{max(values):.2f})'
          if len(values) > 1 else f'{values[0]:.2f}%')


def wall(runs: list[Run]) -> str:
  return f'{statistics.mean(r.wall_s for r in runs):.0f} s' if runs else '-'


def verdict(standard: list[float], rs: list[float]) -> str:
  """RS against standard, by how far apart their seeds lie."""
  if len(standard) < 2 or len(rs) < 2:
    return 'one seed: no noise estimate'
  if min(rs) > max(standard):
    return 'RS better: every seed above every baseline seed'
  if max(rs) < min(standard):
    return 'standard better: every seed above every RS seed'
  return 'within seed noise (the ranges overlap)'


def chosen_rates(tune: dict) -> dict[tuple[str, str], float]:
  """{(dataset, mode): learning rate with the best mean minival top-1 over the recipes}."""
  scores = collections.defaultdict(list)
  for (recipe, dataset, mode, lr), run in tune.items():
    scores[dataset, mode, float(lr)].append(run.top1)
  best = {}
  for (dataset, mode, lr), values in sorted(scores.items()):
    mean = statistics.mean(values)
    if (dataset, mode) not in best or mean > best[dataset, mode][1]:
      best[dataset, mode] = (lr, mean)
  return {key: lr for key, (lr, _) in best.items()}


def format_report(found: dict) -> str:
  lines = []
  up = found['upstream']
  if up:
    lines += ['Upstream, Fashion-MNIST test top-1 (reported, not chosen on):', '',
              '| recipe | test top-1, mean (range) | seeds | wall time per run |',
              '|---|---|---|---|']
    for recipe in RECIPES:
      runs = [r for (rec, _), r in sorted(up.items()) if rec == recipe]
      if runs:
        lines.append(f'| {recipe} | {spread([r.top1 for r in runs])} | {len(runs)} | '
                     f'{wall(runs)} |')
    lines.append('')
  tune = found['tune']
  if tune:
    rates = chosen_rates(tune)
    lines += ['Learning-rate choice on minival (top-1 standard / rs; chosen: best mean):', '',
              '| dataset | mode | learning rate | standard | rs | chosen |',
              '|---|---|---|---|---|---|']
    for dataset, mode, lr in sorted({(d, m, float(lr)) for _, d, m, lr in tune}):
      cells = [next((f'{r.top1:.2f}%' for (rec, d, m, l), r in tune.items()
                     if (rec, d, m, float(l)) == (recipe, dataset, mode, lr)), '-')
               for recipe in RECIPES]
      mark = 'yes' if rates[dataset, mode] == lr else ''
      lines.append(f'| {dataset} | {mode} | {lr:g} | {cells[0]} | {cells[1]} | {mark} |')
    lines.append('')
  final = found['final']
  if final:
    lines += ['Downstream test top-1, mean (range) over seeds:', '',
              '| dataset | mode | standard | RS transfer subset | RS - standard | verdict | '
              'from scratch | wall time per run |', '|---|---|---|---|---|---|---|---|']
    for dataset, mode in sorted({(d, m) for _, d, m, _ in final},
                                key=lambda key: (key[0], key[1] != 'probe')):
      per = {recipe: [r for (rec, d, m, _), r in sorted(final.items())
                      if (rec, d, m) == (recipe, dataset, mode)]
             for recipe in (*RECIPES, 'scratch')}
      scratch = per.pop('scratch')
      if not all(per.values()):
        continue
      top1 = {recipe: [r.top1 for r in runs] for recipe, runs in per.items()}
      diff = statistics.mean(top1['rs']) - statistics.mean(top1['standard'])
      lines.append(f'| {dataset} | {mode} | {spread(top1["standard"])} | {spread(top1["rs"])} | '
                   f'{diff:+.2f} | {verdict(top1["standard"], top1["rs"])} | '
                   f'{spread([r.top1 for r in scratch]) if scratch else "-"} | '
                   f'{wall(per["standard"] + per["rs"])} |')
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_string('runs', None, 'The study\'s runs directory (scripts/transfer_study.sh).')
  flags.mark_flags_as_required(['runs'])


def main(argv):
  del argv
  try:
    found = collect(flags.FLAGS.runs)
  except ValueError as e:
    cli.fail(str(e))
  print(format_report(found))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
