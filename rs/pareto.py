"""Speed/accuracy Pareto plots of finished runs (the paper's figures 2-4 in kind).

  python -m rs.pareto --runs=runs/scaling --out=docs/scaling

--runs: workdirs, or directories holding workdirs (rs.sweep's OUT). From each workdir it reads
config.json (the network and its training), eval.json (the last evaluation; top-1 of the EMA
weights where the run kept an EMA, else of the raw ones) and benchmark.jsonl (rs.benchmark:
training-step latency and memory, FLOPs, params); runs lacking either file are listed and
skipped. It writes to --out:
  accuracy_vs_latency.png  top-1 against training-step time per image, the Pareto frontier of
                           each epoch regime marked (no other run is both faster and better);
  accuracy_vs_memory.png   top-1 against the train step's memory;
  error_vs_flops.png       top-1 error against forward FLOPs (log-log);
  pareto.md                a markdown table of every run, frontier runs in bold.
Points are coloured by training epochs and shaped by depth, so depth scaling and width scaling
can be told apart.
"""
import dataclasses
import json
import os

from absl import app, flags


@dataclasses.dataclass
class Run:
  name: str
  depth: int
  width: float
  resolution: int
  epochs: float
  top1: float
  params: int
  gflops: float
  train_ms_per_image: float
  memory_bytes: int | None
  frontier: bool = False


def _depth(model_name: str) -> int:
  digits = ''.join(ch for ch in model_name if ch.isdigit())
  return int(digits) if digits else 0


def load_run(workdir: str) -> Run | None:
  """The run's figures, or None where config.json, eval.json or benchmark.jsonl is missing."""
  import tensorflow as tf
  from rs import metrics
  paths = {name: os.path.join(workdir, name)
           for name in ('config.json', metrics.EVAL_FILE, 'benchmark.jsonl')}
  if not all(tf.io.gfile.exists(p) for p in paths.values()):
    return None
  with tf.io.gfile.GFile(paths['config.json']) as f:
    config = json.load(f)
  last = metrics.read_evals(workdir)[-1]
  with tf.io.gfile.GFile(paths['benchmark.jsonl']) as f:
    bench = {r['measurement']: r for r in map(json.loads, f)}
  train = bench['rs/train']
  width = config['model'].get('width_multiplier') or 1.0
  return Run(
      name=os.path.basename(os.path.normpath(workdir)),
      depth=_depth(config['model']['name']), width=float(width),
      resolution=config['data']['image_size'],
      epochs=last['epoch'],
      top1=last['ema_top1'] if config.get('ema_decay') else last['top1'],
      params=bench['model']['params'], gflops=bench['model']['gflops_forward'],
      train_ms_per_image=train['step_ms'] / train['batch_size'],
      memory_bytes=train.get('memory_analysis_bytes') or train.get('device_peak_bytes'))


def find_workdirs(paths) -> list[str]:
  """The paths that are workdirs (hold config.json), and the workdirs directly inside the
  others."""
  import tensorflow as tf
  found = []
  for path in paths:
    if tf.io.gfile.exists(os.path.join(path, 'config.json')):
      found.append(path)
    elif tf.io.gfile.isdir(path):
      found += sorted(os.path.join(path, d.rstrip('/')) for d in tf.io.gfile.listdir(path)
                      if tf.io.gfile.exists(os.path.join(path, d.rstrip('/'), 'config.json')))
  return found


def mark_frontier(runs: list[Run]) -> None:
  """Per epoch regime: a run is on the frontier when no other run of the regime is at least
  as fast and at least as accurate, and strictly better in one of the two."""
  for run in runs:
    peers = [r for r in runs if round(r.epochs, 3) == round(run.epochs, 3) and r is not run]
    run.frontier = not any(
        r.train_ms_per_image <= run.train_ms_per_image and r.top1 >= run.top1 and
        (r.train_ms_per_image < run.train_ms_per_image or r.top1 > run.top1) for r in peers)


def table(runs: list[Run]) -> str:
  lines = ['| run | depth | width | resolution | epochs | params | GFLOPs | train ms / image | '
           'memory MiB | top-1 |', '|' + '---|' * 10]
  for r in sorted(runs, key=lambda r: (r.epochs, -r.top1)):
    cells = [r.name, r.depth, f'{r.width:g}', r.resolution, f'{r.epochs:g}', f'{r.params:,}',
             f'{r.gflops:.3g}', f'{r.train_ms_per_image:.3g}',
             f'{r.memory_bytes / 2**20:.0f}' if r.memory_bytes else '-', f'{100 * r.top1:.2f}%']
    if r.frontier:
      cells = [f'**{c}**' for c in cells]
    lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
  return '\n'.join(lines) + '\n\nBold: on the Pareto frontier of its epoch regime (latency vs top-1).\n'


def plot(runs: list[Run], out: str) -> list[str]:
  """The three figures as PNG files in `out`; returns their paths."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import tensorflow as tf
  tf.io.gfile.makedirs(out)
  regimes = sorted({round(r.epochs, 3) for r in runs})
  depths = sorted({r.depth for r in runs})
  colors = dict(zip(regimes, plt.rcParams['axes.prop_cycle'].by_key()['color']))
  markers = dict(zip(depths, 'osD^v<>ph*'))
  figures = {
      'accuracy_vs_latency.png': (lambda r: r.train_ms_per_image, lambda r: 100 * r.top1,
                                  'training step, ms per image', 'top-1 (%)', False),
      'accuracy_vs_memory.png': (lambda r: (r.memory_bytes or 0) / 2**20, lambda r: 100 * r.top1,
                                 'train step memory (MiB)', 'top-1 (%)', False),
      'error_vs_flops.png': (lambda r: r.gflops, lambda r: 100 * (1 - r.top1),
                             'forward GFLOPs per image', 'top-1 error (%)', True),
  }
  paths = []
  for filename, (x, y, xlabel, ylabel, loglog) in figures.items():
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in runs:
      ax.scatter(x(r), y(r), color=colors[round(r.epochs, 3)], marker=markers[r.depth], s=36)
    if filename == 'accuracy_vs_latency.png':
      for regime in regimes:
        front = sorted((r for r in runs if r.frontier and round(r.epochs, 3) == regime), key=x)
        ax.plot([x(r) for r in front], [y(r) for r in front], color=colors[regime], lw=1)
    if loglog:
      ax.set_xscale('log')
      ax.set_yscale('log')
    for regime in regimes:
      ax.scatter([], [], color=colors[regime], marker='s', label=f'{regime:g} epochs')
    for depth in depths:
      ax.scatter([], [], color='gray', marker=markers[depth], label=f'depth {depth}')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out, filename)
    with tf.io.gfile.GFile(path, 'wb') as f:
      fig.savefig(f, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
    paths.append(path)
  return paths


def main(argv):
  del argv
  f = flags.FLAGS
  import tensorflow as tf
  workdirs = find_workdirs(f.runs)
  runs, skipped = [], []
  for workdir in workdirs:
    run = load_run(workdir)
    (runs if run else skipped).append(run or workdir)
  for workdir in skipped:
    print(f'skipped (no eval.json or benchmark.jsonl yet): {workdir}')
  if not runs:
    raise app.UsageError(f'no finished, benchmarked runs under {", ".join(f.runs)}: run '
                         'rs.sweep with --benchmark first')
  mark_frontier(runs)
  paths = plot(runs, f.out)
  with tf.io.gfile.GFile(os.path.join(f.out, 'pareto.md'), 'w') as out:
    out.write(table(runs))
  print(f'{len(runs)} runs -> ' + ', '.join(paths + [os.path.join(f.out, 'pareto.md')]))


if __name__ == '__main__':
  flags.DEFINE_list('runs', None, 'Workdirs, or directories of workdirs.')
  flags.DEFINE_string('out', None, 'Where the PNG files and pareto.md go.')
  flags.mark_flags_as_required(['runs', 'out'])
  app.run(main)
