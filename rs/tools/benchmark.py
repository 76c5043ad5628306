"""Training and inference speed of a ResNet-RS, side by side with timm's, in one process.

  python -m rs.tools.benchmark --model=resnetrs50 --image_size=160 --batch_size=32 \
      [--dtype=bfloat16] [--compare=timm] [--json]
  python -m rs.tools.benchmark --config=configs/fashion_mnist.py     # what a config trains
  python -m rs.tools.benchmark --model=resnetrs350 --image_size=256 --batch_size=4 \
      --dtype=bfloat16 --remat=none,block,stage --kinds=train         # remat's trade-off

What is timed is what rs.train runs: the same jax.jit train step (forward, backward, SGD,
BN statistics, EMA, metrics; state donated) built by rs.programs from configs/base.py with
the model, size, batch and dtype given; inference is the jitted forward in eval mode. Inputs
are random uint8 images already on the device, so only the device's work is timed (the input
pipeline has its own benchmark, rs.tools.bench_input).

Measurements (one JSON object each with --json):
- model: trainable params, forward GFLOPs per image (rs.tools.summary's convention, the paper's);
- matmul_peak: a large matmul in the run's dtype (bf16 x bf16 -> f32 for bfloat16) on the
  same device, the yardstick for utilisation;
- rs/train, rs/inference: compile seconds, median step time over the timed steps, images/s,
  achieved GFLOP/s (training counts 3x the forward FLOPs: backward is twice the forward) and
  that as a fraction of matmul_peak, the compiled program's memory analysis (arguments +
  outputs not donated + temporaries) and the device's peak memory where the backend reports
  it (GPU/TPU, not CPU);
- with --compare=timm, timm/train and timm/inference for mode eager and compiled
  (torch.compile): timm's model of the same name (`tf_efficientnet_b*` for EfficientNet), same batch, resolution and thread
  count, SGD with nesterov momentum and label smoothing; bfloat16 means torch.autocast; with
  --channels_last (default) in NHWC memory format, timm's fastest CPU layout;
- with --remat (or --devices with several counts), one rs contender per setting, side by side;
- ratio: rs images/s over timm's, per step kind and timm mode, and over the first rs contender.

Timing: after warm-up, the contenders run in alternating rounds (--rounds rounds of --steps
steps each), and the median of every contender's step times is taken, so that a machine
whose speed drifts over minutes (shared VMs) moves all of them alike.
"""
import contextlib
import json
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from rs import cli, memory, models, optim, programs, sharding, step as step_lib, validate
from rs.errors import UserError
from rs.models import DTYPES, MODELS, architecture, registry
from rs.models import layers
from rs.models.layers import REMATS
from rs.tools import summary

TIMM_MODES = ('eager', 'compiled')


# The paper's recipe, read by path as rs.main reads --config (configs/ installs beside rs).
BASE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'configs',
                           'base.py')


def rs_config(recipe, model: str, image_size: int, batch_size: int, dtype: str,
              width_multiplier: float | None = None, frames: int | None = None):
  """A copy of the training config `recipe` (configs/base.py: the paper's) at this model,
  resolution, batch and dtype. An EfficientNet gets its own official recipe instead
  (configs/efficientnet.py: RMSProp, BN epsilon 1e-3, its dropout); a 3D network takes clips
  of `frames` frames (default 32) with the Kinetics recipe (configs/kinetics400.py)."""
  video = model in MODELS and registry.family(model).input_rank == 5
  if frames is not None and not video:
    raise ValueError(f'--frames={frames}: {model} takes images; frames apply to 3D networks')
  if model.startswith('efficientnet_') and model in MODELS:
    from configs import efficientnet
    recipe = efficientnet.get_config(model.removeprefix('efficientnet_'))
  if video:
    from configs import kinetics400
    recipe = kinetics400.get_config()
  c = recipe.copy_and_resolve_references()
  c.model.name = model
  c.model.width_multiplier = width_multiplier
  c.data.image_size = image_size
  if video:
    c.data.frames = frames or summary.VIDEO_FRAMES
  c.batch_size = batch_size
  c.dtype = dtype
  return c


def linear_probe_config(config):
  """`config` training only the classifier: the backbone's weights and BN statistics frozen."""
  probe = config.copy_and_resolve_references()
  probe.optimizer.param_groups = ('^head/:1', '.*:0')
  probe.optimizer.freeze_bn_statistics = True
  return probe


def median_step_times(contenders: dict[str, Callable[[], None]], steps: int, rounds: int,
                      warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each contender (a call runs one step and waits for it).

  Each contender is warmed up, then all run in alternating rounds of `steps` calls.
  """
  for fn in contenders.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, fn in contenders.items():
      for _ in range(steps):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


def matmul_peak_gflops(dtype: str, n: int | None = None, repeats: int = 10) -> float:
  """GFLOP/s of an n x n matmul in `dtype` (bfloat16: bf16 inputs, f32 accumulation)."""
  n = n or (2048 if jax.default_backend() == 'cpu' else 8192)
  in_dtype = DTYPES[dtype]
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(in_dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(in_dtype)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  seconds = median_step_times({'mm': lambda: matmul(a, b).block_until_ready()}, repeats, 1)
  return 2 * n**3 / seconds['mm'] / 1e9


def _device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


class RsContender:
  """rs's compiled train step and forward on one fixed random batch (on the device)."""

  def __init__(self, config, num_classes: int = 1000, mesh=None, seed: int = 0):
    self.mesh = mesh or sharding.create_mesh()
    sharding.check_batch_size('batch_size', config.batch_size, self.mesh)
    size = config.data.image_size
    # An image, or a clip of data.frames frames for a 3D network.
    shape = (*([config.data.frames] if config.data.get('frames') else []), size, size, 3)
    schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, 0, 10_000, 100)
    training = programs.build_training(config, self.mesh, num_classes, shape, schedule)
    self.remat = layers.remat_of(training.model)
    rng = np.random.default_rng(seed)
    self.batch = sharding.to_global({
        'image': rng.integers(0, 256, (config.batch_size, *shape), np.uint8),
        'label': rng.integers(0, num_classes, (config.batch_size,), np.int32)}, self.mesh)
    self.state = jax.jit(training.init, out_shardings=training.state_sharding)(
        jax.random.key(seed))

    start = time.perf_counter()
    self.train_fn = training.train_fn.lower(self.state, self.batch).compile()
    self.train_compile_s = time.perf_counter() - start

    def forward(state, batch):
      variables = {'params': state.params, 'batch_stats': state.batch_stats}
      return step_lib.logits(training.model, variables, batch['image'], config.data.mean,
                             config.data.std)

    start = time.perf_counter()
    self.forward_fn = jax.jit(forward).lower(self.state, self.batch).compile()
    self.inference_compile_s = time.perf_counter() - start

  def train_step(self):
    self.state, metrics = self.train_fn(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))

  def inference_step(self):
    self.forward_fn(self.state, self.batch).block_until_ready()

  def memory(self, kind: str) -> dict:
    compiled = self.train_fn if kind == 'train' else self.forward_fn
    return {'memory_analysis_bytes': memory.step_bytes(compiled),
            'device_peak_bytes': _device_peak_bytes()}


def timm_name(name: str) -> str:
  """timm's model for an rs name: the same name, or for EfficientNet the TF port
  (`tf_efficientnet_b*`: TF 'SAME' padding and BN epsilon, as rs builds it)."""
  return f'tf_{name}' if name.startswith('efficientnet_') else name


class TimmContender:
  """timm's model of the same name in PyTorch: a train step (SGD, nesterov momentum, label
  smoothing, as rs's recipe) and an eval-mode forward, eager or torch.compile'd."""

  def __init__(self, name: str, config, mode: str, channels_last: bool = True,
               num_classes: int = 1000, threads: int | None = None, seed: int = 0):
    import timm
    import torch
    self.torch = torch
    torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count())
    self.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    format_ = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model(timm_name(name), pretrained=False, num_classes=num_classes,
                              drop_rate=config.model.dropout_rate)
    self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    self.model = model.to(self.device, memory_format=format_)
    self.run_model = torch.compile(self.model) if mode == 'compiled' else self.model
    self.optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=config.optimizer.momentum,
        nesterov=config.optimizer.nesterov, weight_decay=config.optimizer.weight_decay)
    self.loss = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    size, batch = config.data.image_size, config.batch_size
    self.images = torch.randn(batch, 3, size, size, device=self.device).contiguous(
        memory_format=format_)
    self.labels = torch.randint(0, num_classes, (batch,), device=self.device)
    self.autocast = (
        (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
        if config.dtype == 'bfloat16' else contextlib.nullcontext)
    # The first call of each kind compiles (torch.compile); it is timed as compile time.
    self.train_compile_s = self._first_call(self.train_step)
    self.inference_compile_s = self._first_call(self.inference_step)

  def _sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def _first_call(self, fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

  def train_step(self):
    self.model.train()
    with self.autocast():
      loss = self.loss(self.run_model(self.images), self.labels)
    loss.backward()
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    self._sync()

  def inference_step(self):
    self.model.eval()
    with self.torch.inference_mode(), self.autocast():
      self.run_model(self.images)
    self._sync()

  def memory(self, kind: str) -> dict:
    del kind
    peak = (self.torch.cuda.max_memory_allocated() if self.device.type == 'cuda' else None)
    return {'memory_analysis_bytes': None, 'device_peak_bytes': peak}


def run(config, compare: tuple[str, ...] = (), timm_modes: tuple[str, ...] = TIMM_MODES,
        channels_last: bool = True, steps: int = 5, rounds: int = 3,
        kinds: tuple[str, ...] = ('train', 'inference'),
        devices: int | tuple[int, ...] | None = None, num_classes: int = 1000,
        linear_probe: bool = False, remat: tuple[str, ...] = ()) -> list[dict]:
  """All measurements of one benchmark run, as a list of dicts (see the module docstring).

  `config`: a training config (configs/*.py, or `rs_config(...)`); its model, resolution,
  batch size and dtype are benchmarked. `devices`: how many of the local devices the batch is
  split over (default all); several counts, e.g. (1, 2), time one rs contender each, side by
  side, and add their ratios to the first (on a CPU, one device per core runs one stream of
  XLA's work per core: docs/performance.md). `linear_probe` adds an rs contender that trains
  only the classifier (optimizer.param_groups ('^head/:1', '.*:0'), BN statistics frozen),
  timed side by side with full training, for its ratio. `remat`: model.remat settings
  ('none', 'block', 'stage'), one rs contender each, side by side (the config's own setting
  when empty): step time and XLA's memory of rematerialisation against none.
  """
  model = config.model.name
  image_size, batch_size, dtype = config.data.image_size, config.batch_size, config.dtype
  if model not in MODELS:
    raise ValueError(f'--model={model!r} is not registered; use one of {", ".join(MODELS)}')
  if dtype not in DTYPES:
    raise ValueError(f'--dtype={dtype!r}: use one of {sorted(DTYPES)}')
  if set(remat) - set(REMATS) or len(set(remat)) != len(remat):
    raise ValueError(f'--remat={",".join(remat)}: give distinct settings of {", ".join(REMATS)}')
  unknown = set(compare) - {'timm'}
  if unknown:
    raise ValueError(f'--compare={",".join(sorted(unknown))}: only timm is supported')
  overrides = architecture.of_config(config.model)
  frames = config.data.get('frames')
  if compare and frames:
    raise ValueError(f'--compare={",".join(compare)}: timm has no 3D networks; time {model} '
                     'alone')
  if compare and overrides:
    raise ValueError(f'--compare=timm needs the released architecture of {model} (timm has '
                     f'no other); this one changes {", ".join(sorted(overrides))}')
  model_summary = summary.summarize(model, image_size, num_classes, compiled=False,
                                    frames=frames, **overrides)
  forward_flops = model_summary['gflops'] * 1e9
  counts = (devices,) if isinstance(devices, int) else tuple(devices or ())
  if len(set(counts)) != len(counts) or any(d < 1 for d in counts):
    raise ValueError(f'--devices={",".join(map(str, counts))}: give distinct counts >= 1')
  if max(counts, default=0) > jax.local_device_count():
    raise ValueError(f'--devices={max(counts)} but this process has {jax.local_device_count()} '
                     f'{jax.default_backend()} devices')
  meshes = [sharding.create_mesh(jax.local_devices()[:d]) for d in counts] or [
      sharding.create_mesh()]
  common = {'model': model, **overrides, 'image_size': image_size,
            **({'frames': frames} if frames else {}), 'batch_size': batch_size,
            'dtype': dtype, 'backend': jax.default_backend(), 'devices': meshes[0].size}
  results = [{'measurement': 'model', **common, 'params': model_summary['params'],
              'gflops_forward': model_summary['gflops']}]
  peak = matmul_peak_gflops(dtype)
  results.append({'measurement': 'matmul_peak', **common, 'gflops_per_sec': peak})

  # One rs contender per device count and remat setting: mode 'jax.jit', with ' xN' when
  # several counts and ' remat=R' for each remat setting asked for.
  # Remat changes only training: the forward is timed for the first setting alone.
  rs_modes, train_only = {}, set()
  for m in meshes:
    for i, setting in enumerate(remat or (None,)):
      mode = 'jax.jit' + (f' x{m.size}' if len(meshes) > 1 else '')
      mode += f' remat={setting}' if setting else ''
      rs_modes[mode] = (summary.with_remat(config, setting) if setting else config, m)
      if i:
        train_only.add(mode)
  if linear_probe:
    rs_modes['linear probe'] = (linear_probe_config(config), meshes[0])
    train_only.add('linear probe')
  contenders = {('rs', mode): RsContender(c, num_classes, mesh)
                for mode, (c, mesh) in rs_modes.items()}
  if 'timm' in compare:
    for mode in timm_modes:
      contenders[('timm', mode)] = TimmContender(model, config, mode, channels_last,
                                                  num_classes)
  for kind in kinds:
    # The probe's forward is the full model's: only its train step is timed.
    timed = {key: c for key, c in contenders.items()
             if kind == 'train' or key[0] != 'rs' or key[1] not in train_only}
    seconds = median_step_times({key: getattr(c, f'{kind}_step') for key, c in timed.items()},
                                steps, rounds)
    for (framework, mode), contender in timed.items():
      # Training counts the backward as twice the forward; a linear probe has none to speak
      # of (the head's is ~1e-4 of the network's).
      factor = 3 if kind == 'train' and mode != 'linear probe' else 1
      step_s = seconds[(framework, mode)]
      images_per_sec = batch_size / step_s
      achieved = forward_flops * factor * images_per_sec / 1e9
      results.append({
          'measurement': f'{framework}/{kind}', **common, 'framework': framework, 'mode': mode,
          'step_ms': 1e3 * step_s, 'images_per_sec': images_per_sec,
          'compile_s': getattr(contender, f'{kind}_compile_s'),
          'achieved_gflops_per_sec': achieved, 'fraction_of_matmul_peak': achieved / peak,
          **contender.memory(kind)})
      if framework == 'timm':
        results[-1]['params'] = contender.params
      else:
        results[-1]['devices'] = rs_modes[mode][1].size
        results[-1]['remat'] = contender.remat
    results += _ratios(results, kind, common)
  return results


def _ratios(results: list[dict], kind: str, common: dict) -> list[dict]:
  """Each rs contender's images/s over each timm mode's, and over the first rs contender's."""
  rs_runs = [r for r in results if r['measurement'] == f'rs/{kind}']
  baselines = [(f"timm/{r['mode']}", r) for r in results if r['measurement'] == f'timm/{kind}']
  baselines += [(f"rs/{rs_runs[0]['mode']}", rs_runs[0])] if len(rs_runs) > 1 else []
  ratios = []
  for rs_run in rs_runs:
    for over, baseline in baselines:
      if baseline is not rs_run:
        ratios.append({'measurement': 'ratio', **common, 'kind': kind, 'mode': rs_run['mode'],
                       'devices': rs_run['devices'], 'over': over,
                       'rs_over_timm' if over.startswith('timm') else 'rs_over_rs':
                           rs_run['images_per_sec'] / baseline['images_per_sec']})
  return ratios


def format_text(results: list[dict]) -> str:
  """A readable report of run()'s measurements."""
  lines = []
  for r in results:
    m = r['measurement']
    if m == 'model':
      clip = f"{r['frames']}x" if 'frames' in r else ''
      lines.append(f"{r['model']} @{clip}{r['image_size']}, batch {r['batch_size']}, "
                   f"{r['dtype']}, {r['backend']} x{r['devices']}: {r['params']:,} params, "
                   f"{r['gflops_forward']:.3g} GFLOPs forward per "
                   + ('clip (img/s below: clips/s)' if clip else 'image'))
    elif m == 'matmul_peak':
      lines.append(f"matmul peak ({r['dtype']}): {r['gflops_per_sec']:.0f} GFLOP/s")
    elif m == 'ratio':
      value = r.get('rs_over_timm', r.get('rs_over_rs'))
      lines.append(f"ratio {r['kind']}: rs {r['mode']} / {r['over']} = {value:.2f}x")
    else:
      mem = r['memory_analysis_bytes'] or r['device_peak_bytes']
      lines.append(
          f"{m:<15} {r['mode']:<20} {r['step_ms']:9.1f} ms/step {r['images_per_sec']:8.1f} img/s "
          f"{r['achieved_gflops_per_sec']:7.1f} GFLOP/s ({100 * r['fraction_of_matmul_peak']:.0f}%"
          f" of peak)  compile {r['compile_s']:.1f} s"
          + (f'  memory {mem / 2**30:.2f} GiB' if mem else ''))
  return '\n'.join(lines)


def check_sizes(config, devices: tuple[int, ...], from_config: bool) -> None:
  """The batch splits over every device count and the image suits the network, named by the
  flags that set them (--batch_size, or --config.batch_size with a config)."""
  batch_flag, size_flag = (('config.batch_size', 'config.data.image_size') if from_config
                           else ('batch_size', 'image_size'))
  if config.batch_size < 1:
    raise UserError(f'--{batch_flag}={config.batch_size}: give 1 or more')
  for count in devices:
    if config.batch_size % count:
      raise UserError(f'--{batch_flag}={config.batch_size} does not split over --devices='
                      f'{count}: give a multiple of {count}')
  model = models.create_model(config.model.name, **architecture.resolved(config.model))
  validate.check_image_size(model, config.model.name, config.data.image_size, size_flag)


def define_flags():
  config_flags.DEFINE_config_file(
      'config', BASE_CONFIG, 'Benchmark what this training config runs (model, resolution, '
      'batch, dtype; --config.x=... overrides); without it, --model etc. on configs/base.py.')
  flags.DEFINE_string('model', 'resnetrs50', 'A registered model name (rs.models.MODELS).')
  flags.DEFINE_integer('image_size', 160, 'Square input resolution.')
  flags.DEFINE_integer('batch_size', 32, 'Global batch size.')
  flags.DEFINE_integer('frames', None, 'Frames per clip of a 3D network (default 32).',
                       lower_bound=1)
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype.')
  flags.DEFINE_float('width_multiplier', None, 'Channel multiplier (rs only).')
  flags.DEFINE_list('compare', [], 'Also time these implementations: timm.')
  flags.DEFINE_list('timm_modes', list(TIMM_MODES), 'eager and/or compiled (torch.compile).')
  flags.DEFINE_bool('channels_last', True, "timm's inputs and weights in NHWC memory format.")
  flags.DEFINE_integer('steps', 5, 'Timed steps per round.')
  flags.DEFINE_integer('rounds', 3, 'Alternating rounds.')
  flags.DEFINE_list('kinds', ['train', 'inference'], 'What to time: train and/or inference.')
  flags.DEFINE_integer('num_classes', 1000, 'Classifier outputs.')
  flags.DEFINE_list('devices', [], 'Split the batch over this many local devices (default: '
                    'all); several, e.g. 1,2, time one rs contender each side by side. On a '
                    'CPU the process gets as many devices as the largest count.')
  flags.DEFINE_bool('linear_probe', False, 'Also time a train step that trains only the '
                    'classifier (frozen backbone and BN statistics), beside full training.')
  flags.DEFINE_list('remat', [], 'model.remat settings (none, block, stage, auto) to time side by '
                    'side, one rs contender each, with their memory (XLA); default: the '
                    "config's.")
  flags.DEFINE_bool('json', False, 'Print one JSON object per measurement.')


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    config = f.config if f['config'].present else rs_config(
        f.config, f.model, f.image_size, f.batch_size, f.dtype, f.width_multiplier, f.frames)
    devices = tuple(int(d) for d in f.devices)
    sharding.request_cpu_devices(max(devices, default=1))  # before JAX starts (below)
    check_sizes(config, devices, from_config=f['config'].present)
    results = run(config, tuple(f.compare), tuple(f.timm_modes), f.channels_last, f.steps,
                  f.rounds, tuple(f.kinds), devices, f.num_classes, f.linear_probe,
                  tuple(f.remat))
  except ValueError as e:
    raise app.UsageError(str(e))
  if f.json:
    for r in results:
      print(json.dumps(r))
  else:
    print(format_text(results))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
