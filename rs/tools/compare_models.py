"""The paper's headline comparison (sections 7.1-7.2, Table 3): networks of similar official
accuracy, their training steps timed side by side in one process.

  python -m rs.tools.compare_models --batch_size=2 [--pairs=resnetrs101@192/efficientnet_b3@300,...]

Default pairs (official top-1 in brackets): RS-101@192 (81.2) / B3@300 (81.6), RS-152@256
(83.0) / B4@380 (82.9), RS-270@256 (83.8) / B5@456 (83.6), RS-350@256 (84.0) / B6@528 (84.0),
RS-420@320 (84.4) / B7@600 (84.3). Each network trains with its own recipe (configs/base.py,
configs/efficientnet.py) on a fixed random batch: both of a pair are compiled, then run in
alternating rounds (rs.tools.benchmark's timing), so a machine whose speed drifts moves both
alike. Per network: parameters, XLA's forward GFLOPs per image, milliseconds per training image,
and the training step's memory by XLA's analysis (arguments + outputs not donated +
temporaries); per pair, the EfficientNet's time and memory over the ResNet-RS's.
"""
import json

from absl import app, flags

from rs import cli
from rs.models import DTYPES, MODELS, official

DEFAULT_PAIRS = ('resnetrs101@192/efficientnet_b3@300', 'resnetrs152@256/efficientnet_b4@380',
                 'resnetrs270@256/efficientnet_b5@456', 'resnetrs350@256/efficientnet_b6@528',
                 'resnetrs420@320/efficientnet_b7@600')


def parse_pairs(texts) -> list[tuple[tuple[str, int], ...]]:
  """'name@size/name@size' -> ((name, size), (name, size)), checked."""
  pairs = []
  for text in texts:
    pair = []
    for part in text.split('/'):
      name, _, size = part.partition('@')
      if name not in MODELS or not size.isdigit():
        raise app.UsageError(f'--pairs: {part!r}: give MODEL@RESOLUTION with a registered model, '
                             'e.g. resnetrs101@192/efficientnet_b3@300')
      pair.append((name, int(size)))
    if len(pair) != 2:
      raise app.UsageError(f'--pairs: {text!r}: give two networks, A@SIZE/B@SIZE')
    pairs.append(tuple(pair))
  return pairs


def official_top1(name: str, size: int) -> float | None:
  if (name, size) in official.RELEASED:
    return official.RELEASED[name, size][1]
  return official.EFFICIENTNET.get(name, (None, None))[1] if (
      official.TIMM_IMAGE_SIZE.get(name) == size) else None


def measure_pair(pair, batch_size: int, dtype: str, steps: int, rounds: int,
                 devices: int | None = None) -> list[dict]:
  """Both networks of `pair` compiled, then timed in alternating rounds, on the first
  `devices` local devices (None: all)."""
  import jax

  from configs import base
  from rs import sharding
  from rs.tools import benchmark, summary
  mesh = sharding.create_mesh(jax.local_devices()[:devices] if devices else None)
  contenders = {}
  for name, size in pair:
    config = benchmark.rs_config(base.get_config(), name, size, batch_size, dtype)
    contenders[name, size] = benchmark.RsContender(config, mesh=mesh)
  seconds = benchmark.median_step_times({k: c.train_step for k, c in contenders.items()},
                                        steps, rounds)
  rows = []
  for (name, size), contender in contenders.items():
    s = summary.summarize(name, size, compiled=False)
    rows.append({'model': name, 'image_size': size, 'official_top1': official_top1(name, size),
                 'params': s['params'], 'gflops_forward': s['gflops'],
                 'batch_size': batch_size, 'dtype': dtype,
                 'ms_per_image': 1e3 * seconds[name, size] / batch_size,
                 'compile_s': contender.train_compile_s,
                 'memory_gib': contender.memory('train')['memory_analysis_bytes'] / 2**30})
  first, second = rows
  second['time_over_first'] = second['ms_per_image'] / first['ms_per_image']
  second['memory_over_first'] = second['memory_gib'] / first['memory_gib']
  return rows


def markdown(rows: list[dict]) -> str:
  lines = ['| network (official top-1) | params | GFLOPs | ms per training image | step memory '
           '(XLA) | time, memory vs its pair |', '|---|---|---|---|---|---|']
  for r in rows:
    top1 = f" ({r['official_top1']})" if r['official_top1'] else ''
    versus = (f"{r['time_over_first']:.2f}x, {r['memory_over_first']:.2f}x"
              if 'time_over_first' in r else '')
    lines.append(f"| {r['model']}@{r['image_size']}{top1} | {r['params'] / 1e6:.1f}M | "
                 f"{r['gflops_forward']:.1f} | {r['ms_per_image']:.0f} | "
                 f"{r['memory_gib']:.2f} GiB | {versus} |")
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_list('pairs', list(DEFAULT_PAIRS), 'MODEL@SIZE/MODEL@SIZE pairs to compare.')
  flags.DEFINE_integer('batch_size', 2, 'Training images per step, each network.')
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype.')
  flags.DEFINE_integer('steps', 2, 'Timed steps per round.')
  flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')
  flags.DEFINE_integer('devices', None, 'Local devices to split the batch over (default: all).')
  flags.DEFINE_bool('json', False, 'One JSON object per network instead of a table.')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.batch_size < 1 or f.steps < 1 or f.rounds < 1:
    raise app.UsageError('--batch_size, --steps and --rounds: give 1 or more')
  pairs = parse_pairs(f.pairs)
  cli.start_jax()
  rows = []
  for pair in pairs:
    measured = measure_pair(pair, f.batch_size, f.dtype, f.steps, f.rounds, f.devices)
    rows += measured
    for r in measured if f.json else ():
      print(json.dumps(r), flush=True)
  if not f.json:
    print(markdown(rows))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
