"""Parameters and FLOPs of a model: `python -m rs.tools.summary --model=resnetrs50 --image_size=160`.

FLOPs are XLA's count (HloCostAnalysis) of the forward pass of one image, in inference mode,
in two conventions:
  gflops           every conv tap counted, padding included: the paper's convention
                   (2 x multiply-accumulates, as hardware computes them). Counted on the
                   lowered program with padding made explicit (TF1's own pad + VALID form).
  gflops_compiled  XLA's count on the compiled program, which skips taps that only see
                   padding and adds fused element-wise work (BN, ReLU, SE).
RS-50 at 160: 4.59 and 4.41 GFLOPs; the paper reports 4.6. A 3D network's FLOPs are per clip
of --frames frames (default 32: 3D ResNet-RS-50 at 32 x 224^2, 176 GFLOPs).
"""
import glob
import json
import re

import jax
import jax.numpy as jnp
from absl import flags

from rs import cli, validate
from rs.errors import UserError
from rs.models import create_model, official, registry


def _flops(cost) -> float:
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


VIDEO_FRAMES = 32  # a 3D network's default clip length (the Kinetics recipe's)


def summarize(name: str, image_size: int, num_classes: int = 1000, compiled: bool = True,
              frames: int | None = None, **overrides) -> dict:
  """params (trainable), batch-norm statistics, and forward GFLOPs per image (see above), or
  per clip of `frames` frames (default 32) for a 3D network.

  compiled=False skips `gflops_compiled`, which compiles the forward pass (seconds for big
  models); `gflops` needs only the lowered program.
  """
  video = registry.family(name).input_rank == 5 if name in registry.MODELS else False
  if frames is not None and not video:
    raise UserError(f'--frames={frames}: {name} takes images; frames apply to 3D networks '
                    '(resnet3d_rs50, ...)')
  frames = (frames or VIDEO_FRAMES) if video else None
  # Counted on the CPU backend whatever the default device: FLOPs are the program's, and XLA's
  # GPU backend gives no cost analysis of a lowered program (JAX 0.11.2, H200).
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  clip = (frames,) if video else ()
  x = jax.ShapeDtypeStruct((1, *clip, image_size, image_size, 3), jnp.float32, sharding=cpu)
  # XLA's own convolutions: the CPU-friendly lowering pads stride-2 kernels (more taps counted).
  overrides = {'conv_lowering': 'native'} | overrides
  model = create_model(name, num_classes=num_classes, **overrides)
  validate.check_image_size(model, name, image_size)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), False))
  variables = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=cpu),
                           variables)
  count = lambda tree: int(sum(v.size for v in jax.tree.leaves(tree)))
  forward = lambda m: jax.jit(lambda v, img: m.apply(v, img, train=False)).lower(variables, x)
  explicit = create_model(name, num_classes=num_classes, explicit_padding=True, **overrides)
  result = {
      'model': name, 'image_size': image_size, 'num_classes': num_classes,
      **({'frames': frames} if video else {}),
      **{k: v for k, v in overrides.items() if k != 'conv_lowering'},
      'params': count(variables['params']),
      'batch_stats': count(variables['batch_stats']),
      'gflops': _flops(forward(explicit).cost_analysis()) / 1e9,
  }
  if compiled:
    result['gflops_compiled'] = _flops(forward(model).compile().cost_analysis()) / 1e9
  return result


def released_table() -> str:
  """Markdown: measured params and GFLOPs of each released variant next to the official."""
  rows = ['| model | resolution | params | official params | GFLOPs | official GFLOPs | ratio '
          '| official top-1 |', '|---|---|---|---|---|---|---|---|']
  for (name, size), (gflops, top1) in official.RELEASED.items():
    s = summarize(name, size)
    want = official.PARAMS[name]
    rows.append(f"| {name} | {size} | {s['params']:,} | {want:,}"
                f"{' (equal)' if s['params'] == want else ' (DIFFERENT)'} | {s['gflops']:.2f} | "
                f"{gflops} | {s['gflops'] / gflops:.3f} | {top1} |")
  return '\n'.join(rows)


MEMORY_BATCHES = (16, 32, 64)  # per device
DEVICE_GIB = (16, 32, 95)  # a TPU v5e chip or v3 core; v4; v5p


def with_remat(config, remat: str):
  """A copy of `config` with model.remat=`remat` (rs.models.layers.REMATS)."""
  changed = config.copy_and_resolve_references()
  changed.model.remat = remat
  return changed


def train_memory(config, batches=MEMORY_BATCHES, remat: str = 'block') -> list[dict]:
  """Bytes per device of the config's train step (its dtype, 1,000 classes) at each per-device
  batch: `bytes` is XLA's memory analysis (rs.memory.step_bytes) of the step compiled here with
  the accelerators' convolutions (conv_lowering 'native'), `remat_bytes` the same with
  model.remat=`remat` (and the config's remat_policy). Compiled for this machine's backend: a
  CPU's layout and buffer assignment are not a TPU's."""
  import numpy as np

  from rs import programs, sharding
  config = config.copy_and_resolve_references()
  config.model.conv_lowering = 'native'
  size, channels = config.data.image_size, config.data.get('channels') or 3
  shape = (size, size, channels)
  mesh = sharding.create_mesh(jax.devices()[:1])
  example = {'image': np.zeros((1, *shape), np.uint8), 'label': np.zeros((1,), np.int32)}

  def bytes_at(config):
    return programs.train_step_bytes(config, mesh, 1000, shape, lambda step: 0.0, example)

  plain_at, remat_at = (bytes_at(with_remat(config, r)) for r in ('none', remat))
  return [{'batch': b, 'bytes': plain_at(b), 'remat_bytes': remat_at(b)} for b in batches]


def memory_table(paths: list[str], batches=MEMORY_BATCHES, remat: str = 'block') -> str:
  """Markdown: train_memory of each config file, with the devices (DEVICE_GIB) each fits."""
  fits = lambda n: ', '.join(str(g) for g in DEVICE_GIB if n <= g * 2**30) or 'none'
  rows = [f'| config | dtype | per-device batch | GiB | fits (GiB) | GiB, remat={remat} '
          '| fits (GiB) | remat / none |', '|---|---|---|---|---|---|---|---|']
  for path in paths:
    config = cli.load_config_file(path)
    for r in train_memory(config, batches, remat):
      rows.append(f"| {path} | {config.dtype} | {r['batch']} | {r['bytes'] / 2**30:.1f} | "
                  f"{fits(r['bytes'])} | {r['remat_bytes'] / 2**30:.1f} | "
                  f"{fits(r['remat_bytes'])} | {r['remat_bytes'] / r['bytes']:.2f} |")
  return '\n'.join(rows)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.released:
    print(released_table())
    return
  if f.memory_table:
    paths = f.memory_table if f.memory_table != ['released'] else sorted(
        glob.glob('configs/rs*_i*.py'), key=lambda p: tuple(map(int, re.findall(r'\d+', p))))
    batches = [int(b) if b.isdigit() else 0 for b in f.memory_batches]
    if not paths or not batches or min(batches) < 1:
      raise UserError(f'--memory_table={",".join(f.memory_table)} '
                      f'--memory_batches={",".join(f.memory_batches)}: give config files (or '
                      "'released', run from the repository) and per-device batches of 1 or more")
    print(memory_table(paths, batches, f.memory_remat))
    return
  if not f.width_multiplier > 0:
    raise UserError(f'--width_multiplier={f.width_multiplier:g}: give a channel multiplier '
                    'above 0')
  overrides = {} if f.width_multiplier == 1.0 else {'width_multiplier': f.width_multiplier}
  s = summarize(f.model, f.image_size, f.num_classes, frames=f.frames, **overrides)
  if f.json:
    print(json.dumps(s))
  else:
    clip = f"{s['frames']}x" if 'frames' in s else ''
    print(f"{s['model']} @{clip}{s['image_size']}: {s['params']:,} parameters, "
          f"{s['gflops']:.2f} GFLOPs forward (compiled, XLA: {s['gflops_compiled']:.2f})")


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('model', 'resnetrs50', 'A registered model name (rs.models.MODELS).')
  flags.DEFINE_integer('image_size', 224, 'Square input resolution.')
  flags.DEFINE_integer('num_classes', 1000, 'Classifier outputs.')
  flags.DEFINE_float('width_multiplier', 1.0, 'Channel multiplier.')
  flags.DEFINE_integer('frames', None, 'Frames per clip of a 3D network (default 32).',
                       lower_bound=1)
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of text.')
  flags.DEFINE_bool('released', False, 'Print the markdown table of every released variant '
                    'against its official figures (docs/models.md).')
  flags.DEFINE_list('memory_table', [], "Config files ('released': configs/rs*_i*.py): print "
                    "the markdown table of their train step's memory per device "
                    '(docs/performance.md).')
  flags.DEFINE_list('memory_batches', [str(b) for b in MEMORY_BATCHES],
                    '--memory_table: per-device batches.')
  flags.DEFINE_enum('memory_remat', 'block', ['block', 'stage'],
                    '--memory_table: the remat setting of the remat column.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
