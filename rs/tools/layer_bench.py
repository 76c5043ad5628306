"""Per-layer convolution timings, XLA (JAX) against PyTorch, forward and forward + backward.

  python -m rs.tools.layer_bench --image_size=160 --batch_size=32 [--dtype=bfloat16] [--json]

Every distinct convolution shape of a ResNet-RS-50 at the given resolution (the stem, then the
first block of each stage; later blocks repeat those shapes) is timed alone: the forward pass,
and forward + backward (gradients of input and kernel, as training needs). JAX runs
`lax.conv_general_dilated` (NHWC, HWIO, as rs's `conv_lowering='native'`) and, for 1x1 kernels,
the matmul form rs uses on CPU; PyTorch runs `conv2d` in channels-last. Medians of --repeats
calls after warm-up, contenders alternating. This is where rs.tools.benchmark's train-step gap comes
from, layer by layer (docs/performance.md).
"""
import json
import os

import jax
import jax.numpy as jnp
from absl import flags

from rs import cli, validate
from rs.models import create_model
from rs.tools import benchmark


def rs50_convs(image_size: int) -> list[tuple[str, int, int, int, int, int]]:
  """(name, input size, in channels, out channels, kernel, stride) of RS-50's distinct convs."""
  s = image_size
  convs = [('stem1 3x3/2', s, 3, 32, 3, 2), ('stem2 3x3', s // 2, 32, 32, 3, 1),
           ('stem3 3x3', s // 2, 32, 64, 3, 1), ('stem pool 3x3/2', s // 2, 64, 64, 3, 2)]
  size, channels = s // 4, 64
  for stage, width in enumerate((64, 128, 256, 512)):
    stride = 1 if stage == 0 else 2
    out = size // stride
    convs += [(f'stage{stage + 1} 1x1 in', size, channels, width, 1, 1),
              (f'stage{stage + 1} 3x3' + ('/2' if stride == 2 else ''), size, width, width, 3,
               stride),
              (f'stage{stage + 1} 3x3', out, width, width, 3, 1),
              (f'stage{stage + 1} 1x1 out', out, width, 4 * width, 1, 1),
              (f'stage{stage + 1} 1x1 next', out, 4 * width, width, 1, 1)]
    size, channels = out, 4 * width
  return convs


def _jax_fns(batch, size, cin, cout, k, stride, dtype):
  x = jax.random.normal(jax.random.key(0), (batch, size, size, cin), dtype)
  w = jax.random.normal(jax.random.key(1), (k, k, cin, cout), dtype) * 0.1
  pad = [(k // 2, k // 2)] * 2  # symmetric, as TF1 pads strided convs explicitly

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        preferred_element_type=jnp.float32)

  def matmul(x, w):
    return jnp.einsum('nhwc,co->nhwo', x, w[0, 0], preferred_element_type=jnp.float32)

  out = {}
  forms = {'xla': conv}
  if k == 1 and stride == 1:
    forms['matmul'] = matmul
  for form, f in forms.items():
    y = f(x, w)
    g = jax.random.normal(jax.random.key(2), y.shape, jnp.float32)
    fwd = jax.jit(f)
    bwd = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * g), argnums=(0, 1)))
    out[f'jax {form} fwd'] = lambda fwd=fwd: fwd(x, w).block_until_ready()
    out[f'jax {form} fwd+bwd'] = lambda bwd=bwd: jax.block_until_ready(bwd(x, w))
  return out


def _torch_fns(batch, size, cin, cout, k, stride, dtype):
  import torch
  torch_dtype = torch.bfloat16 if dtype == jnp.bfloat16 else torch.float32
  x = torch.randn(batch, cin, size, size, dtype=torch_dtype).contiguous(
      memory_format=torch.channels_last)
  w = (torch.randn(cout, cin, k, k, dtype=torch_dtype) * 0.1).contiguous(
      memory_format=torch.channels_last)
  conv = lambda x, w: torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)

  def forward():
    with torch.no_grad():
      conv(x, w)

  xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
  g = torch.randn_like(conv(x, w))

  def forward_backward():
    xg.grad = wg.grad = None
    conv(xg, wg).backward(g)

  return {'torch fwd': forward, 'torch fwd+bwd': forward_backward}


def run(image_size: int = 160, batch_size: int = 32, dtype: str = 'float32',
        repeats: int = 5, only: str = '') -> list[dict]:
  jdtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[dtype]
  results = []
  for name, size, cin, cout, k, stride in rs50_convs(image_size):
    if only and only not in name:
      continue
    fns = {**_jax_fns(batch_size, size, cin, cout, k, stride, jdtype),
           **_torch_fns(batch_size, size, cin, cout, k, stride, jdtype)}
    times = benchmark.median_step_times(fns, steps=1, rounds=repeats)
    out = -(-size // stride)
    flops = 2 * batch_size * out * out * cin * cout * k * k
    row = {'layer': name, 'input': [batch_size, size, size, cin], 'out_channels': cout,
           'kernel': k, 'stride': stride, 'dtype': dtype, 'gflop_forward': flops / 1e9,
           **{f'{key} ms': 1e3 * t for key, t in times.items()}}
    for pass_ in ('fwd', 'fwd+bwd'):
      best_jax = min(t for key, t in times.items() if key.startswith('jax') and
                     key.endswith(' ' + pass_))
      row[f'{pass_} jax/torch time'] = best_jax / times[f'torch {pass_}']
    results.append(row)
  return results


def main(argv):
  del argv
  import torch
  f = flags.FLAGS
  # The layers are RS-50's: an image RS-50 can take.
  validate.check_image_size(create_model('resnetrs50'), 'resnetrs50', f.image_size)
  torch.set_num_threads(os.cpu_count())
  results = run(f.image_size, f.batch_size, f.dtype, f.repeats, f.only)
  if f.json:
    for r in results:
      print(json.dumps(r))
    return
  print(f"{'layer':22s} {'GFLOP':>6s} {'jax fwd':>8s} {'torch':>7s} {'ratio':>6s}   "
        f"{'jax f+b':>8s} {'torch':>7s} {'ratio':>6s}  (ms; ratio = best jax / torch time)")
  for r in results:
    jf = min(v for k, v in r.items() if k.startswith('jax') and k.endswith('fwd ms'))
    jb = min(v for k, v in r.items() if k.startswith('jax') and k.endswith('fwd+bwd ms'))
    print(f"{r['layer']:22s} {r['gflop_forward']:6.2f} {jf:8.1f} {r['torch fwd ms']:7.1f} "
          f"{r['fwd jax/torch time']:6.2f}   {jb:8.1f} {r['torch fwd+bwd ms']:7.1f} "
          f"{r['fwd+bwd jax/torch time']:6.2f}")
  total = {k: sum(r[k] for r in results) for k in results[0] if k.endswith(' ms')}
  print('sums (ms):', ', '.join(f'{k[:-3]} {v:.0f}' for k, v in total.items()))


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_integer('image_size', 160, 'Input resolution of the network.')
  flags.DEFINE_integer('batch_size', 32, 'Batch.', lower_bound=1)
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
  flags.DEFINE_integer('repeats', 5, 'Timed calls per contender.', lower_bound=1)
  flags.DEFINE_string('only', '', 'Only layers whose name contains this.')
  flags.DEFINE_bool('json', False, 'One JSON object per layer.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
