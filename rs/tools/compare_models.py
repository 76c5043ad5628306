"""The paper's headline comparison (sections 7.1-7.2, Table 3): networks of similar official
accuracy, their training steps timed side by side in one process.

  python -m rs.tools.compare_models --batch_size=2 [--pairs=resnetrs101@192/efficientnet_b3@300,...]

Default pairs (official top-1 in brackets): RS-101@192 (81.2) / B3@300 (81.6), RS-152@256
(83.0) / B4@380 (82.9), RS-270@256 (83.8) / B5@456 (83.6), RS-350@256 (84.0) / B6@528 (84.0),
RS-420@320 (84.4) / B7@600 (84.3). Each network trains with its own recipe (configs/base.py,
configs/efficientnet.py) on a fixed random batch: both of a pair are compiled, then run in
alternating rounds (rs.tools.benchmark's timing), so a machine whose speed drifts moves both
alike. Per network: parameters, XLA's forward GFLOPs per image, milliseconds per training image
and per inference image (the forward alone, same batch), the training step's memory by XLA's
analysis (arguments + outputs not donated + temporaries) and the peak resident memory of a
process that trains that network alone (--rss; Linux: the high-water mark is reset after
compilation, so it is the training steps' peak: weights, optimizer state, activations, the
runtime); per pair, the second network's figures over the first's.
"""
import json
import logging
import os
import subprocess
import sys

from absl import app, flags

from rs import cli
from rs.models import DTYPES, MODELS, official

DEFAULT_PAIRS = ('resnetrs101@192/efficientnet_b3@300', 'resnetrs152@256/efficientnet_b4@380',
                 'resnetrs270@256/efficientnet_b5@456', 'resnetrs350@256/efficientnet_b6@528',
                 'resnetrs420@320/efficientnet_b7@600')


def parse_network(text: str) -> tuple[str, int]:
  """'name@size' -> (name, size), checked."""
  name, _, size = text.partition('@')
  if name not in MODELS or not size.isdigit():
    raise app.UsageError(f'--pairs: {text!r}: give MODEL@RESOLUTION with a registered model, '
                         'e.g. resnetrs101@192/efficientnet_b3@300')
  return name, int(size)


def parse_pairs(texts) -> list[tuple[tuple[str, int], ...]]:
  """'name@size/name@size' -> ((name, size), (name, size)), checked."""
  pairs = []
  for text in texts:
    pair = tuple(parse_network(part) for part in text.split('/'))
    if len(pair) != 2:
      raise app.UsageError(f'--pairs: {text!r}: give two networks, A@SIZE/B@SIZE')
    pairs.append(pair)
  return pairs


def official_top1(name: str, size: int) -> float | None:
  if (name, size) in official.RELEASED:
    return official.RELEASED[name, size][1]
  return official.EFFICIENTNET.get(name, (None, None))[1] if (
      official.TIMM_IMAGE_SIZE.get(name) == size) else None


def _mesh(devices: int | None):
  import jax

  from rs import sharding
  return sharding.create_mesh(jax.local_devices()[:devices] if devices else None)


def _contender(name: str, size: int, batch_size: int, dtype: str, mesh):
  from configs import base
  from rs.tools import benchmark
  config = benchmark.rs_config(base.get_config(), name, size, batch_size, dtype)
  return benchmark.RsContender(config, mesh=mesh)


def _status_gib(field: str) -> float:
  """A VmHWM/VmRSS line of /proc/self/status in GiB."""
  with open('/proc/self/status') as f:
    kib = next(int(line.split()[1]) for line in f if line.startswith(field + ':'))
  return kib / 2**20


def training_peak_rss_gib(name: str, size: int, batch_size: int, dtype: str, steps: int,
                          devices: int | None = None) -> float | None:
  """In this process (meant to hold nothing else): the network's step compiled and run once,
  the resident high-water mark reset (Linux /proc/self/clear_refs), `steps` more steps, the
  mark read. None where the kernel has no resettable mark."""
  contender = _contender(name, size, batch_size, dtype, _mesh(devices))
  contender.train_step()
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')  # 5: reset the peak resident set size to the current one
  except OSError:
    return None
  for _ in range(steps):
    contender.train_step()
  return _status_gib('VmHWM')


def peak_rss_in_own_process(name: str, size: int, batch_size: int, dtype: str, steps: int,
                            devices: int | None = None) -> float | None:
  """training_peak_rss_gib in a fresh process (the high-water mark is per process, and this
  one holds the other network): this command with --rss_probe."""
  command = [sys.executable, '-m', 'rs.tools.compare_models', f'--rss_probe={name}@{size}',
             f'--batch_size={batch_size}', f'--dtype={dtype}', f'--steps={steps}']
  if devices:
    command.append(f'--devices={devices}')
  done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
  if done.returncode:
    lines = [line for line in done.stderr.strip().splitlines() if ':' in line]
    why = ('killed by SIGKILL: out of memory?' if done.returncode == -9 else
           (lines or ['(no output)'])[-1])
    raise RuntimeError(f'the peak memory probe of {name}@{size} failed ({why})')
  return json.loads(done.stdout.strip().splitlines()[-1])['peak_rss_gib']


def measure_pair(pair, batch_size: int, dtype: str, steps: int, rounds: int,
                 devices: int | None = None, rss: bool = True) -> list[dict]:
  """Both networks of `pair` compiled, then their training and inference steps timed in
  alternating rounds, on the first `devices` local devices (None: all); with `rss`, each
  network's training peak resident memory in a process of its own, measured first: this
  process holds nothing large yet, so the command needs no more memory than its largest
  network (a process keeps freed buffers' pages, so probes run later would add to it)."""
  from rs.tools import benchmark, summary
  peak_rss = {}
  for name, size in pair:
    peak_rss[name, size] = None
    try:
      if rss:
        peak_rss[name, size] = peak_rss_in_own_process(name, size, batch_size, dtype, steps,
                                                        devices)
    except RuntimeError as e:  # the timings stand without it
      logging.warning('%s; its peak RSS is left out.', e)
  mesh = _mesh(devices)
  contenders = {key: _contender(*key, batch_size, dtype, mesh) for key in pair}
  seconds = benchmark.median_step_times({k: c.train_step for k, c in contenders.items()},
                                        steps, rounds)
  inference = benchmark.median_step_times(
      {k: c.inference_step for k, c in contenders.items()}, steps, rounds)
  rows = []
  for (name, size), contender in contenders.items():
    s = summary.summarize(name, size, compiled=False)
    rows.append({'model': name, 'image_size': size, 'official_top1': official_top1(name, size),
                 'params': s['params'], 'gflops_forward': s['gflops'],
                 'batch_size': batch_size, 'dtype': dtype,
                 'ms_per_image': 1e3 * seconds[name, size] / batch_size,
                 'inference_ms_per_image': 1e3 * inference[name, size] / batch_size,
                 'compile_s': contender.train_compile_s,
                 'memory_gib': contender.memory('train')['memory_analysis_bytes'] / 2**30,
                 'peak_rss_gib': peak_rss[name, size]})
  first, second = rows
  for key in ('ms_per_image', 'inference_ms_per_image', 'memory_gib', 'peak_rss_gib'):
    if first[key] and second[key]:
      second[f'{key}_over_first'] = second[key] / first[key]
  return rows


def _versus(row: dict, key: str) -> str:
  ratio = row.get(f'{key}_over_first')
  return f'{ratio:.2f}x' if ratio else ''


def markdown(rows: list[dict]) -> str:
  """The table of docs/performance.md: one line per network, the second of each pair with its
  ratios to the first (training time, inference time, XLA memory, peak RSS)."""
  lines = ['| network (official top-1) | params | GFLOPs | ms / training image | '
           'ms / inference image | step memory (XLA) | peak RSS | vs its pair: train time, '
           'inference, XLA memory, RSS |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    top1 = f" ({r['official_top1']})" if r['official_top1'] else ''
    rss = f"{r['peak_rss_gib']:.2f} GiB" if r.get('peak_rss_gib') else 'n/a'
    versus = ', '.join(_versus(r, k) for k in ('ms_per_image', 'inference_ms_per_image',
                                               'memory_gib', 'peak_rss_gib'))
    lines.append(f"| {r['model']}@{r['image_size']}{top1} | {r['params'] / 1e6:.1f}M | "
                 f"{r['gflops_forward']:.1f} | {r['ms_per_image']:,.0f} | "
                 f"{r['inference_ms_per_image']:,.0f} | {r['memory_gib']:.2f} GiB | {rss} | "
                 f"{versus if 'ms_per_image_over_first' in r else ''} |")
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_list('pairs', list(DEFAULT_PAIRS), 'MODEL@SIZE/MODEL@SIZE pairs to compare.')
  flags.DEFINE_integer('batch_size', 2, 'Training images per step, each network.')
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype.')
  flags.DEFINE_integer('steps', 2, 'Timed steps per round.')
  flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')
  flags.DEFINE_integer('devices', None, 'Local devices to split the batch over (default: all).')
  flags.DEFINE_bool('rss', True, 'Also measure each network\'s training peak resident memory, '
                    'in a process of its own (compiles it once more).')
  flags.DEFINE_bool('json', False, 'One JSON object per network instead of a table.')
  flags.DEFINE_string('rss_probe', None, 'Internal: MODEL@SIZE, print its training peak RSS.')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.batch_size < 1 or f.steps < 1 or f.rounds < 1:
    raise app.UsageError('--batch_size, --steps and --rounds: give 1 or more')
  if f.rss_probe:
    name, size = parse_network(f.rss_probe)
    cli.start_jax()
    print(json.dumps({'peak_rss_gib': training_peak_rss_gib(name, size, f.batch_size, f.dtype,
                                                            f.steps, f.devices)}))
    return
  pairs = parse_pairs(f.pairs)
  cli.start_jax()
  rows = []
  for pair in pairs:
    measured = measure_pair(pair, f.batch_size, f.dtype, f.steps, f.rounds, f.devices, f.rss)
    rows += measured
    for r in measured if f.json else ():
      print(json.dumps(r), flush=True)
  if not f.json:
    print(markdown(rows))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
