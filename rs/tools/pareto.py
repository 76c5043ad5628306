"""Speed/accuracy Pareto plots of finished runs (the paper's figures 2-4 in kind).

  python -m rs.tools.pareto --runs=runs/scaling --out=docs/scaling

--runs: workdirs, or directories holding workdirs (rs.tools.sweep's OUT). From each workdir it reads
config.json (the network and its training), eval.json (the last evaluation; top-1 of the EMA
weights where the run kept an EMA, else of the raw ones) and benchmark.jsonl (rs.tools.benchmark:
training-step latency and memory, FLOPs, params); runs lacking either file are listed and
skipped. Any registered networks may be mixed (ResNet-RS beside EfficientNet: the paper's
Figure 5 in kind). It writes to --out:
  accuracy_vs_latency.png  top-1 against training-step time per image, the Pareto frontier of
                           each epoch regime marked (no other run is both faster and better);
  accuracy_vs_memory.png   top-1 against the train step's memory;
  error_vs_flops.png       top-1 error against forward FLOPs (log-log);
  scaling_curves.png       one panel per epoch regime and resolution: top-1 against latency,
                           a solid line through the networks of each family at each width
                           (depth scaling) and a dashed one through the widths of each network
                           (width scaling);
  pareto.md                a markdown table of every run, frontier runs in bold.
In the first three, points are coloured by training epochs, shaped by network (a depth of
ResNet-RS, an EfficientNet variant) and sized by width; hollow points are the lower resolutions,
so every scaling axis can be told apart. In scaling_curves.png the solid line of a width runs
through one family's networks in order (ResNet-RS depths: depth scaling; EfficientNet B0 -> B7:
its compound scaling).
"""
import dataclasses
import json
import os

from absl import flags

from rs import cli
from rs.errors import UserError


@dataclasses.dataclass
class Run:
  name: str
  model: str  # the registered network
  width: float  # relative to the registered network's width
  resolution: int
  epochs: float
  top1: float
  params: int
  gflops: float
  train_ms_per_image: float
  memory_bytes: int | None
  frontier: bool = False


def label(model: str) -> str:
  """A short name for plots: RS-50, R-50 (vanilla), B3 (EfficientNet)."""
  for prefix, short in (('resnetrs', 'RS-'), ('resnet', 'R-'), ('efficientnet_b', 'B')):
    if model.startswith(prefix):
      return short + model[len(prefix):]
  return model


def network_order(model: str) -> tuple[str, int]:
  """Family, then size within it: the order of a scaling line."""
  from rs.models import registry
  digits = ''.join(ch for ch in model if ch.isdigit())
  return registry.family(model).__name__ + model.rstrip('0123456789'), int(digits or 0)


def load_run(workdir: str) -> Run | None:
  """The run's figures, or None where config.json, eval.json or benchmark.jsonl is missing."""
  from rs import rundir
  run = rundir.path(workdir)
  if not all((run / name).exists() for name in (rundir.CONFIG_FILE, rundir.EVAL_FILE,
                                                'benchmark.jsonl')):
    return None
  config = rundir.read_config(workdir)
  last = rundir.read_evals(workdir)[-1]
  bench = {r['measurement']: r
           for r in map(json.loads, (run / 'benchmark.jsonl').read_text().splitlines())}
  train = bench['rs/train']
  from rs.models import MODELS
  model = config['model']['name']
  registered_width = MODELS.get(model, {}).get('width_multiplier', 1.0)
  width = (config['model'].get('width_multiplier') or registered_width) / registered_width
  return Run(
      name=os.path.basename(os.path.normpath(workdir)),
      model=model, width=round(float(width), 6),
      resolution=config['data']['image_size'],
      # The nominal length (1, 4, 350) labels the regime; a run given in steps: its last epoch.
      epochs=config.get('train_epochs') or last['epoch'],
      top1=last['ema_top1'] if config.get('ema_decay') else last['top1'],
      params=bench['model']['params'], gflops=bench['model']['gflops_forward'],
      train_ms_per_image=train['step_ms'] / train['batch_size'],
      memory_bytes=train.get('memory_analysis_bytes') or train.get('device_peak_bytes'))


def find_workdirs(paths) -> list[str]:
  """The paths that are workdirs (hold config.json), and the workdirs directly inside the
  others."""
  from rs import rundir
  found = []
  for path in paths:
    if (rundir.path(path) / rundir.CONFIG_FILE).exists():
      found.append(path)
    elif rundir.path(path).is_dir():
      found += sorted(os.path.join(path, p.name) for p in rundir.path(path).iterdir()
                      if (p / rundir.CONFIG_FILE).exists())
  return found


def _regime(run: Run) -> float:
  return round(run.epochs, 3)


def _epochs_label(regime: float) -> str:
  return f'{regime:g} epoch' + ('' if regime == 1 else 's')


def _plain_log_axis(axis) -> None:
  """A log axis labelled 0.2, 0.5, 1, 2 rather than 2x10^-1 at every minor tick."""
  from matplotlib import ticker
  axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(ticker.FormatStrFormatter('%g'))
  axis.set_minor_formatter(ticker.NullFormatter())


def mark_frontier(runs: list[Run]) -> None:
  """Per epoch regime: a run is on the frontier when no other run of the regime is at least
  as fast and at least as accurate, and strictly better in one of the two."""
  for run in runs:
    peers = [r for r in runs if _regime(r) == _regime(run) and r is not run]
    run.frontier = not any(
        r.train_ms_per_image <= run.train_ms_per_image and r.top1 >= run.top1 and
        (r.train_ms_per_image < run.train_ms_per_image or r.top1 > run.top1) for r in peers)


def table(runs: list[Run]) -> str:
  lines = ['| run | network | width | resolution | epochs | params | GFLOPs | train ms / image | '
           'memory MiB | top-1 |', '|' + '---|' * 10]
  for r in sorted(runs, key=lambda r: (r.epochs, -r.top1)):
    cells = [r.name, r.model, f'{r.width:g}', r.resolution, f'{r.epochs:g}', f'{r.params:,}',
             f'{r.gflops:.3g}', f'{r.train_ms_per_image:.3g}',
             f'{r.memory_bytes / 2**20:.0f}' if r.memory_bytes else '-', f'{100 * r.top1:.2f}%']
    if r.frontier:
      cells = [f'**{c}**' for c in cells]
    lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
  return ('\n'.join(lines) +
          '\n\nBold: on the Pareto frontier of its epoch regime (latency vs top-1).\n')


def plot(runs: list[Run], out: str) -> list[str]:
  """The figures as PNG files in `out`; returns their paths."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from rs import rundir
  rundir.path(out).mkdir(parents=True, exist_ok=True)
  regimes = sorted({_regime(r) for r in runs})
  models = sorted({r.model for r in runs}, key=network_order)
  widths = sorted({r.width for r in runs})
  top_resolution = max(r.resolution for r in runs)
  cycle = plt.rcParams['axes.prop_cycle'].by_key()['color']
  colors = dict(zip(regimes, cycle))
  markers = {m: 'osD^v<>ph*XP'[i % 12] for i, m in enumerate(models)}
  sizes = {w: 24 * 1.8**i for i, w in enumerate(widths)}
  figures = {
      'accuracy_vs_latency.png': (lambda r: r.train_ms_per_image, lambda r: 100 * r.top1,
                                  'training step, ms per image', 'top-1 (%)', 'x'),
      'accuracy_vs_memory.png': (lambda r: (r.memory_bytes or 0) / 2**20, lambda r: 100 * r.top1,
                                 'train step memory (MiB)', 'top-1 (%)', 'x'),
      'error_vs_flops.png': (lambda r: r.gflops, lambda r: 100 * (1 - r.top1),
                             'forward GFLOPs per image', 'top-1 error (%)', 'xy'),
  }

  def save(fig, filename):
    path = os.path.join(out, filename)
    with rundir.path(path).open('wb') as f:
      fig.savefig(f, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path

  paths = []
  for filename, (x, y, xlabel, ylabel, log_axes) in figures.items():
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in runs:
      color = colors[_regime(r)]
      ax.scatter(x(r), y(r), marker=markers[r.model], s=sizes[r.width], edgecolors=color,
                 facecolors=color if r.resolution == top_resolution else 'none', linewidths=1.2)
    if filename == 'accuracy_vs_latency.png':
      for regime in regimes:
        front = sorted((r for r in runs if r.frontier and _regime(r) == regime), key=x)
        ax.plot([x(r) for r in front], [y(r) for r in front], color=colors[regime], lw=1)
    if 'x' in log_axes:
      ax.set_xscale('log')
      _plain_log_axis(ax.xaxis)
    if 'y' in log_axes:
      ax.set_yscale('log')
      _plain_log_axis(ax.yaxis)
    for regime in regimes:
      ax.scatter([], [], color=colors[regime], marker='s', label=_epochs_label(regime))
    for model in models:
      ax.scatter([], [], color='gray', marker=markers[model], label=label(model))
    for width in widths:
      ax.scatter([], [], color='gray', marker='o', s=sizes[width], label=f'width {width:g}')
    if len({r.resolution for r in runs}) > 1:
      ax.scatter([], [], edgecolors='gray', facecolors='none', marker='o',
                 label=f'hollow: below {top_resolution}px')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='best')
    paths.append(save(fig, filename))
  paths.append(save(_scaling_curves(plt, runs, regimes, models, widths, cycle),
                    'scaling_curves.png'))
  return paths


def _scaling_curves(plt, runs, regimes, models, widths, cycle):
  """Top-1 against latency per regime (rows) and resolution (columns): depth (or compound)
  scaling of each family at each width (solid, one colour per width), width scaling of each
  network (dashed, grey)."""
  families = {}
  for model in models:  # already in network_order
    families.setdefault(network_order(model)[0], []).append(model)
  resolutions = sorted({r.resolution for r in runs})
  fig, axes = plt.subplots(len(regimes), len(resolutions), squeeze=False, sharex=True,
                           figsize=(4.2 * len(resolutions), 3.4 * len(regimes)))
  width_colors = dict(zip(widths, cycle))
  for row, regime in enumerate(regimes):
    for col, resolution in enumerate(resolutions):
      ax = axes[row][col]
      cell = {(r.width, r.model): r for r in runs
              if _regime(r) == regime and r.resolution == resolution}
      if not cell:  # a regime run at some resolutions only
        ax.set_visible(False)
        continue
      for width in widths:
        for style, family in zip(('-o', '-s', '-^', '-D'), families.values()):
          line = [cell[(width, m)] for m in family if (width, m) in cell]
          ax.plot([r.train_ms_per_image for r in line], [100 * r.top1 for r in line], style,
                  color=width_colors[width], ms=4, label=f'width {width:g}, ' +
                  '\u2192'.join(label(m) for m in family))
      for model in models:
        line = [cell[(w, model)] for w in widths if (w, model) in cell]
        ax.plot([r.train_ms_per_image for r in line], [100 * r.top1 for r in line], '--',
                color='gray', lw=0.8)
        if line:
          ax.annotate(label(model), (line[0].train_ms_per_image, 100 * line[0].top1),
                      fontsize=7, textcoords='offset points', xytext=(3, 3))
      ax.set_xscale('log')
      _plain_log_axis(ax.xaxis)
      ax.set_title(f'{_epochs_label(regime)}, {resolution}px', fontsize=9)
      ax.grid(alpha=0.3, which='both')
      if row == len(regimes) - 1:
        ax.set_xlabel('training step, ms per image')
      if col == 0:
        ax.set_ylabel('top-1 (%)')
  axes[0][0].plot([], [], '--', color='gray', lw=0.8, label='width scaling of one network')
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  return fig


def main(argv):
  del argv
  f = flags.FLAGS
  workdirs = find_workdirs(f.runs)
  runs, skipped = [], []
  for workdir in workdirs:
    run = load_run(workdir)
    (runs if run else skipped).append(run or workdir)
  for workdir in skipped:
    print(f'skipped (no eval.json or benchmark.jsonl yet): {workdir}')
  if not runs:
    raise UserError(f'no finished, benchmarked runs under {", ".join(f.runs)}: run '
                    'rs.tools.sweep with --benchmark first')
  mark_frontier(runs)
  paths = plot(runs, f.out)
  from rs import rundir
  rundir.path(os.path.join(f.out, 'pareto.md')).write_text(table(runs))
  print(f'{len(runs)} runs -> ' + ', '.join(paths + [os.path.join(f.out, 'pareto.md')]))


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_list('runs', None, 'Workdirs, or directories of workdirs.')
  flags.DEFINE_string('out', None, 'Where the PNG files and pareto.md go.')
  flags.mark_flags_as_required(['runs', 'out'])


if __name__ == '__main__':
  define_flags()
  cli.run(main)
