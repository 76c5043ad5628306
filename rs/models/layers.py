"""Building blocks of ResNet-RS and EfficientNet, each matching the official TF code
(tensorflow/tpu).

Blocks receive their conv and norm as `functools.partial`s from the network, so dtype,
BatchNorm momentum and train/eval mode are decided in one place.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ModuleDef = Callable[..., nn.Module]

# TF1 `tf.compat.v1.variance_scaling_initializer()` defaults: scale 1.0, fan_in, truncated
# normal. Not He init (scale 2): the released models were trained from this one.
conv_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
# TF1 classifier: normal(stddev=0.01), bias zero.
dense_kernel_init = nn.initializers.normal(stddev=0.01)


def fixed_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """TF1 `conv2d_fixed_padding`: pad (k-1)//2 before and the rest after, whatever the stride.

  For odd kernels this is symmetric, like PyTorch's padding=k//2, and unlike TF2's 'SAME',
  which pads (0, 1) for stride 2 on even inputs.
  """
  before = (kernel_size - 1) // 2
  after = kernel_size - 1 - before
  return ((before, after), (before, after))


def same_padding(size: int, kernel_size: int, strides: int) -> tuple[int, int]:
  """TF 'SAME' (EfficientNet's padding): the output is ceil(size / strides), and the padding
  that takes is split with the smaller half first - (0, 1) for a 3x3/2 conv on an even input,
  where fixed_padding gives (1, 1)."""
  out = -(-size // strides)
  total = max((out - 1) * strides + kernel_size - size, 0)
  return total // 2, total - total // 2


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2/2 average pool with TF 'SAME' padding that does not count the pad (TF avg_pool, timm
  AvgPool2d(ceil_mode=True, count_include_pad=False)): odd sides get one zero row/column at the
  end, and the windows over it divide by the pixels they really cover.

  Written as a reshape and a sum rather than reduce_window: XLA's SPMD partitioner computed
  wrong gradients for the padded reduce_window inside sharded ResNet-RS steps (JAX 0.10.2, CPU;
  tests/test_train.py compares 1 and 8 devices), and the reshape is no slower.
  """
  b, h, w, c = x.shape
  ph, pw = h % 2, w % 2
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
  total = x.reshape(b, (h + ph) // 2, 2, (w + pw) // 2, 2, c).sum(axis=(2, 4))
  rows = np.full((h + ph) // 2, 2.0)
  cols = np.full((w + pw) // 2, 2.0)
  rows[-1] -= ph
  cols[-1] -= pw
  return total / jnp.asarray(np.outer(rows, cols)[None, :, :, None], x.dtype)


class GroupBatchNorm(nn.Module):
  """BatchNorm whose training statistics come from groups of `group_size` examples.

  TPU training computes BN statistics per core (TF1 has no cross-replica BN for ResNet-RS), so
  the effective BN batch is the per-core batch, not the global one. Under one jitted step over
  the global batch that is reproduced by reshaping the batch into groups: with groups aligned
  to the batch sharding, no statistic crosses a device. None means the whole batch.

  Variables and their names equal flax's nn.BatchNorm (params scale/bias, batch_stats mean/var)
  so checkpoints and converters do not care which is used. The stored statistics are the means
  over groups of the group means and of the group (biased) variances.
  """
  use_running_average: bool = False
  # Paths of BN layers ('stage1_block1/conv1/bn') that keep their statistics in training too:
  # they normalise with the stored averages and never update them (a frozen backbone).
  fixed_statistics: frozenset = frozenset()
  group_size: int | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', self.bias_init, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if self.use_running_average or '/'.join(self.path) in self.fixed_statistics:
      mean, var = ra_mean.value, ra_var.value
    else:
      batch = x.shape[0]
      size = batch if self.group_size is None else self.group_size
      if size < 1 or batch % size:
        raise ValueError(f'model.bn_group_size={self.group_size} must divide the batch of '
                         f'{batch} examples (per step, over all devices)')
      groups = x32.reshape(batch // size, size, *x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = jnp.mean(groups, axis=axes, keepdims=True)
      var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, axis=(0, *axes))
        ra_var.value = m * ra_var.value + (1 - m) * jnp.mean(var, axis=(0, *axes))
      y = (groups - mean) * jax.lax.rsqrt(var + self.epsilon)
      return (y.reshape(x.shape) * scale + bias).astype(self.dtype)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * scale + bias).astype(self.dtype)


class ConvBN(nn.Module):
  """Conv (no bias), BatchNorm, optional activation: the unit both families are made of."""
  features: int
  kernel_size: int
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm
  strides: int = 1
  activation: Callable | None = nn.relu  # None: linear (the last BN of a residual branch)
  zero_init_scale: bool = False
  explicit_padding: bool = False
  # 'fixed': TF1's conv2d_fixed_padding (ResNet-RS); 'same': TF 'SAME' (EfficientNet), which
  # depends on the input size.
  padding: str = 'fixed'
  depthwise: bool = False  # one filter per input channel (features = the input's channels)

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.strides
    if self.padding == 'same':
      padding = tuple(same_padding(x.shape[i], k, s) for i in (1, 2))
    else:
      padding = fixed_padding(k)
    if self.explicit_padding and k > 1:
      # TF1's own form: pad, then a VALID conv. Same numbers; XLA's cost analysis then counts
      # the padded taps too, which is the paper's FLOP convention (see rs/tools/summary.py).
      x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
      padding = 'VALID'
    groups = x.shape[-1] if self.depthwise else 1
    x = self.conv(groups if self.depthwise else self.features, (k, k), strides=(s, s),
                  padding=padding, feature_group_count=groups, name='conv')(x)
    scale_init = nn.initializers.zeros if self.zero_init_scale else nn.initializers.ones
    x = self.norm(scale_init=scale_init, name='bn')(x)
    return x if self.activation is None else self.activation(x)


class SqueezeExcite(nn.Module):
  """TF1 `squeeze_excitation` (and EfficientNet's, with swish): spatial mean, 1x1 conv +
  activation, 1x1 conv + sigmoid, rescale."""
  squeeze_features: int
  dtype: Any = jnp.float32
  activation: Callable = nn.relu
  kernel_init: Callable = conv_kernel_init

  @nn.compact
  def __call__(self, x):
    # The mean is taken in float32: in bfloat16 a sum over 100+ positions loses digits.
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
    s = nn.Conv(self.squeeze_features, (1, 1), kernel_init=self.kernel_init,
                dtype=self.dtype, name='reduce')(s)
    s = nn.Conv(x.shape[-1], (1, 1), kernel_init=self.kernel_init,
                dtype=self.dtype, name='expand')(self.activation(s))
    return x * nn.sigmoid(s)


class StochasticDepth(nn.Module):
  """TF1 `drop_connect`: drop the whole residual branch per example, rescale survivors."""
  rate: float
  deterministic: bool

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def pooled_head(x, num_classes: int, dropout_rate: float, deterministic: bool, dtype,
                kernel_init: Callable) -> jax.Array:
  """Both families' classifier, called inside the network: global average pool (in float32),
  dropout, a dense layer with bias named 'head'."""
  x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(dtype)
  x = nn.Dropout(dropout_rate, deterministic=deterministic)(x)
  return nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name='head')(x)


class Bottleneck(nn.Module):
  """Post-activation bottleneck, stride on the 3x3 conv ("v1.5"), as TF1 `bottleneck_block`.

  Order: 1x1 -> 3x3 (stride) -> 1x1 (4x, BN gamma zero-initialised) -> SE -> stochastic
  depth -> + shortcut -> ReLU.
  """
  features: int  # bottleneck width; the block outputs 4x this
  conv_bn: ModuleDef  # ConvBN with the network's conv, norm and padding bound
  strides: int = 1
  projection: bool = False  # first block of a stage: the shortcut changes shape
  se_ratio: float = 0.25  # 0 turns Squeeze-Excite off
  resnetd_shortcut: bool = True  # 2x2 avg-pool before the 1x1 projection on stride 2
  zero_init_last_bn: bool = True
  drop_rate: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.features
    shortcut = x
    if self.projection:
      strides = self.strides
      if self.resnetd_shortcut and self.strides == 2:
        # ResNet-D: average first, so the 1x1 conv sees every input pixel.
        shortcut = avg_pool_2x2(x)
        strides = 1
      shortcut = self.conv_bn(out_features, 1, strides=strides, activation=None,
                              name='shortcut')(shortcut)

    y = self.conv_bn(self.features, 1, name='conv1')(x)
    y = self.conv_bn(self.features, 3, strides=self.strides, name='conv2')(y)
    y = self.conv_bn(out_features, 1, activation=None, zero_init_scale=self.zero_init_last_bn,
                     name='conv3')(y)
    if self.se_ratio > 0:
      y = SqueezeExcite(max(1, int(out_features * self.se_ratio)), dtype=self.dtype, name='se')(y)
    y = StochasticDepth(self.drop_rate, self.deterministic)(y)
    return nn.relu(y + shortcut)
