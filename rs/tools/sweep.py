"""The scaling study (paper section 6): a grid of widths x depths x resolutions x epochs, as
runnable configs, and a launcher that trains and benchmarks any subset, one after another.

  python -m rs.tools.sweep --config=configs/fashion_mnist.py --out=runs/scaling \
      --widths=0.25,0.5,1 --depths=26,50,101 --resolutions=28,32 --epochs=2,8 [--only=GLOB]
      [--models=efficientnet_b0,efficientnet_b1] [--benchmark] [--dry_run]

Each point gets its own workdir OUT/NAME (NAME = w{width}_d{depth}_r{resolution}_e{epochs} for
ResNet-RS, {model}_w{width}_r{resolution}_e{epochs} for --models), so an interrupted sweep
resumes where it stopped (finished runs only report their evaluation) and rs.tools.pareto reads
the results: python -m rs.tools.pareto --runs=OUT --out=docs/scaling.

The paper's grid (`PAPER_GRID`) is the default. Regularisation grows with the model as in the
released configs (facts sheet 2.1), the only public statement of the paper's rule:
RandAugment magnitude 10 up to 160px and 15 above (where the base config uses RandAugment);
stochastic depth 0.1 from depth 200 on; dropout 0.4 from 320px on depth 350 and more, else 0.25.
--regularize=false keeps the base config's values everywhere.

--models adds any other registered networks to the grid, e.g. EfficientNets beside ResNet-RS
(the paper's Figure 5 in kind). Every point trains with the base config's recipe; a width is
relative to the registered network's own (EfficientNet-B3 at width 1 is B3). An EfficientNet
keeps its official definition (configs/efficientnet.py: dropout, drop connect, BN), and
--regularize sets its RandAugment magnitude by EfficientNet-RS's rule (10 up to 224px, 15 up
to 320, 20 above). Other networks (e.g. a vanilla resnet50) keep the base config's values.
"""
import copy
import dataclasses
import fnmatch
import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from rs import cli
from rs.errors import UserError
from rs.models import MODELS, registry

PAPER_GRID = {
    'widths': (0.25, 0.5, 1.0, 1.5, 2.0),
    'depths': (26, 50, 101, 200, 300, 350, 400),
    'resolutions': (128, 160, 224, 320, 448),
    'epochs': (10, 100, 350),
}


@dataclasses.dataclass(frozen=True)
class Point:
  model: str  # a registered network
  width: float  # relative to the registered network's width
  resolution: int
  epochs: float

  @property
  def depth(self) -> int | None:
    """A ResNet-RS point's depth (None for other networks)."""
    return int(self.model[len('resnetrs'):]) if self.model.startswith('resnetrs') else None

  @property
  def name(self) -> str:
    network = f'd{self.depth}' if self.depth else self.model
    first, rest = (f'w{self.width:g}', network) if self.depth else (network, f'w{self.width:g}')
    return f'{first}_{rest}_r{self.resolution}_e{self.epochs:g}'


def regularization(depth: int, resolution: int) -> dict:
  """Dropout, stochastic depth and RandAugment magnitude for a model of this depth trained at
  this resolution, following the released configs (RS-50@160 ... RS-420@320)."""
  return {
      'dropout_rate': 0.4 if resolution >= 320 and depth >= 350 else 0.25,
      'stochastic_depth_rate': 0.1 if depth >= 200 else 0.0,
      'randaugment_magnitude': 10 if resolution <= 160 else 15,
  }


def configure(base, point: Point, regularize: bool = True):
  """`base` (a training config) changed to train the point's network."""
  c = copy.deepcopy(base)
  c.model.stage_sizes = None  # the network's registered layout, not the base config's
  c.data.image_size = point.resolution
  c.train_epochs = float(point.epochs)
  c.train_steps = None
  registered_width = MODELS[point.model].get('width_multiplier', 1.0)
  c.model.width_multiplier = registered_width * point.width
  if registry.family(point.model) is registry.EfficientNet:
    from configs import efficientnet, efficientnet_rs
    efficientnet.set_network(c, point.model.removeprefix('efficientnet_'))
    if regularize and c.data.randaugment_layers:
      c.data.randaugment_magnitude = efficientnet_rs.randaugment_magnitude(point.resolution)
    return c
  c.model.name = point.model
  if regularize and point.depth:
    r = regularization(point.depth, point.resolution)
    c.model.dropout_rate = r['dropout_rate']
    c.model.stochastic_depth_rate = r['stochastic_depth_rate']
    if c.data.randaugment_layers:
      c.data.randaugment_magnitude = r['randaugment_magnitude']
  return c


def networks(depths, models=()) -> list[str]:
  """The grid's networks: ResNet-RS at each depth, then `models`; each checked."""
  names = []
  for depth in depths:
    if f'resnetrs{depth}' not in MODELS:
      known = sorted(int(n[len('resnetrs'):]) for n in MODELS if n.startswith('resnetrs'))
      raise UserError(f'--depths: {depth} is not registered; use some of {known}')
    names.append(f'resnetrs{depth}')
  for name in models:
    try:
      registry.check_name(name)
    except UserError as e:
      raise UserError(f'--models: {e}') from None
    names.append(name)
  if not names:
    raise UserError('--depths and --models are both empty: give at least one network')
  return names


def expand(base, widths, depths, resolutions, epochs, only: str = '*',
           regularize: bool = True, models=()) -> list[tuple[Point, object]]:
  """Every (point, config) of the grid whose name matches the glob `only`, cheapest first
  (epochs, then network, width, resolution), so short runs report early."""
  for flag, values in (('widths', widths), ('resolutions', resolutions), ('epochs', epochs)):
    if not values or any(not v > 0 for v in values):
      raise UserError(f'--{flag}={",".join(f"{v:g}" for v in values)}: give values above 0')
  order = networks(depths, models)
  points = sorted((Point(m, float(w), int(r), float(e))
                   for e in epochs for m in order for w in widths for r in resolutions),
                  key=lambda p: (p.epochs, order.index(p.model), p.width, p.resolution))
  return [(p, configure(base, p, regularize)) for p in points if fnmatch.fnmatch(p.name, only)]


def run(points, out: str, benchmark: bool = False, num_classes: int | None = None, mesh=None,
        **benchmark_options) -> None:
  """Trains each config in OUT/NAME (resuming or skipping finished ones) on `mesh` (default
  all devices) and, with `benchmark`, writes OUT/NAME/benchmark.jsonl from rs.tools.benchmark at the
  config's batch (`benchmark_options`: rs.tools.benchmark.run's steps, rounds, kinds)."""
  from rs import train
  for i, (point, config) in enumerate(points):
    workdir = os.path.join(out, point.name)
    logging.info('Sweep %d/%d: %s', i + 1, len(points), point.name)
    if finished(workdir, point):
      logging.info('%s has its final evaluation: not trained again.', point.name)
    else:
      train.train_and_evaluate(config, workdir, mesh)
    if benchmark:
      write_benchmark(config, workdir, num_classes, **benchmark_options)


def finished(workdir: str, point: Point) -> bool:
  """The run has evaluated at its last epoch: its eval.json alone (without checkpoints, e.g. a
  study's results carried to another machine) is enough to skip it."""
  from rs import rundir
  evals = rundir.read_evals(workdir)
  return bool(evals) and evals[-1]['epoch'] >= point.epochs * (1 - 1e-6)


def write_benchmark(config, workdir: str, num_classes: int | None = None,
                    **options) -> list[dict]:
  """rs.tools.benchmark's measurements of the config's train and inference steps on one device,
  into workdir/benchmark.jsonl (kept if already there)."""
  from rs import rundir
  from rs.tools import benchmark
  path = rundir.path(workdir) / 'benchmark.jsonl'
  if path.exists():
    return [json.loads(line) for line in path.read_text().splitlines()]
  results = benchmark.run(config, devices=1, num_classes=num_classes or 1000, **options)
  path.write_text(''.join(json.dumps(r) + '\n' for r in results))
  return results


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'The base training config.')
  flags.DEFINE_string('out', None, 'Parent directory of the runs (local or gs://).')
  flags.DEFINE_list('widths', list(map(str, PAPER_GRID['widths'])), 'Width multipliers.')
  flags.DEFINE_list('depths', list(map(str, PAPER_GRID['depths'])), 'Registered ResNet-RS '
                    'depths (empty: none).')
  flags.DEFINE_list('models', [], 'Other registered networks for the grid, e.g. '
                    'efficientnet_b0,efficientnet_b1.')
  flags.DEFINE_list('resolutions', list(map(str, PAPER_GRID['resolutions'])), 'Image sizes.')
  flags.DEFINE_list('epochs', list(map(str, PAPER_GRID['epochs'])), 'Training epochs.')
  flags.DEFINE_string('only', '*', 'Glob on run names, e.g. "*_e10" or "w1_d50_*".')
  flags.DEFINE_bool('regularize', True, 'Scale regularisation with the model (see above).')
  flags.DEFINE_bool('benchmark', False, 'Also write each run\'s benchmark.jsonl.')
  flags.DEFINE_integer('num_classes', None, 'Classes for the benchmark\'s classifier '
                       '(default 1000; the data set\'s count matters little).')
  flags.DEFINE_bool('dry_run', False, 'Only list the runs.')
  flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  del argv
  f = flags.FLAGS
  numbers = {}
  for flag, parse in (('widths', float), ('depths', int), ('resolutions', int),
                      ('epochs', float)):
    try:
      numbers[flag] = tuple(parse(v) for v in getattr(f, flag))
    except ValueError:
      raise app.UsageError(f'--{flag}={",".join(getattr(f, flag))}: give comma-separated '
                           f'{"integers" if parse is int else "numbers"}') from None
  try:
    points = expand(f.config, numbers['widths'], numbers['depths'], numbers['resolutions'],
                    numbers['epochs'], f.only, f.regularize, f.models)
  except ValueError as e:
    raise app.UsageError(str(e))
  if not points:
    raise app.UsageError(f'--only={f.only!r} matches none of the grid\'s runs')
  if f.dry_run:
    for point, _ in points:
      print(os.path.join(f.out, point.name))
    return
  from rs import logs
  logs.quiet_library_logs()
  run(points, f.out, f.benchmark, f.num_classes)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
