"""Building blocks of ResNet-RS, EfficientNet and the 3D ResNet-RS for video, each matching the
official TF code (tensorflow/tpu; tensorflow/models for 3D).

Blocks receive their conv and norm as `functools.partial`s from the network, so dtype,
BatchNorm momentum and train/eval mode are decided in one place. Every block works on images
(batch, height, width, channels) and on clips (batch, time, height, width, channels): kernel
sizes and strides are an int (the same along every spatial axis) or a tuple per axis, and
pooling, squeeze-excite and stochastic depth reduce over whatever axes lie between the batch
and the channels.
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rs.models import by_backend, convolution

ModuleDef = Callable[..., nn.Module]

# TF1 `tf.compat.v1.variance_scaling_initializer()` defaults: scale 1.0, fan_in, truncated
# normal. Not He init (scale 2): the released models were trained from this one.
conv_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
# TF1 classifier: normal(stddev=0.01), bias zero.
dense_kernel_init = nn.initializers.normal(stddev=0.01)


def per_axis(value, ndim: int) -> tuple[int, ...]:
  """A kernel size or stride as one int per spatial axis (an int repeats)."""
  return tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim


def spatial_axes(x) -> tuple[int, ...]:
  """The axes between the batch and the channels: (1, 2) for images, (1, 2, 3) for clips."""
  return tuple(range(1, x.ndim - 1))


def fixed_padding(kernel_size) -> tuple[tuple[int, int], ...]:
  """TF1 `conv2d_fixed_padding`: pad (k-1)//2 before and the rest after, whatever the stride,
  per axis (an int kernel: two axes).

  For odd kernels this is symmetric, like PyTorch's padding=k//2, and unlike TF2's 'SAME',
  which pads (0, 1) for stride 2 on even inputs.
  """
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in per_axis(kernel_size, 2))


def same_padding(size: int, kernel_size: int, strides: int) -> tuple[int, int]:
  """TF 'SAME' (EfficientNet's padding): the output is ceil(size / strides), and the padding
  that takes is split with the smaller half first - (0, 1) for a 3x3/2 conv on an even input,
  where fixed_padding gives (1, 1)."""
  out = -(-size // strides)
  total = max((out - 1) * strides + kernel_size - size, 0)
  return total // 2, total - total // 2


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """`avg_pool_2x2_images` on images, or on every frame of clips (time is not pooled)."""
  if x.ndim == 5:
    b, t = x.shape[:2]
    pooled = avg_pool_2x2_images(x.reshape(b * t, *x.shape[2:]))
    return pooled.reshape(b, t, *pooled.shape[1:])
  return avg_pool_2x2_images(x)


def avg_pool_2x2_images(x: jax.Array) -> jax.Array:
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


def conv_and_norm(network: nn.Module, train: bool) -> tuple[ModuleDef, ModuleDef]:
  """The conv (no bias) and BatchNorm a network binds into its ConvBNs, from the fields every
  family has: dtype, conv_lowering, fixed_bn_statistics, bn_group_size, bn_momentum and
  bn_epsilon. Flax, like TF, keeps `momentum` of the old statistics: the official momentum 0
  (ResNet-RS) stores the latest batch's statistics, and the EMA of the state averages them."""
  conv = functools.partial(nn.Conv, use_bias=False, dtype=network.dtype,
                           conv_general_dilated=convolution.conv_general_dilated(
                               network.conv_lowering))
  norm = functools.partial(GroupBatchNorm, use_running_average=not train,
                           fixed_statistics=network.fixed_bn_statistics,
                           group_size=network.bn_group_size, momentum=network.bn_momentum,
                           epsilon=network.bn_epsilon, dtype=network.dtype)
  return conv, norm


class ConvBN(nn.Module):
  """Conv (no bias), BatchNorm, optional activation: the unit every family is made of."""
  features: int
  kernel_size: int | tuple[int, ...]  # an int: k along every spatial axis
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm
  strides: int | tuple[int, ...] = 1
  activation: Callable | None = nn.relu  # None: linear (the last BN of a residual branch)
  zero_init_scale: bool = False
  explicit_padding: bool = False
  # 'fixed': TF1's conv2d_fixed_padding (ResNet-RS); 'same': TF 'SAME' (EfficientNet), which
  # depends on the input size.
  padding: str = 'fixed'
  depthwise: bool = False  # one filter per input channel (features = the input's channels)

  @nn.compact
  def __call__(self, x):
    k = per_axis(self.kernel_size, x.ndim - 2)
    s = per_axis(self.strides, x.ndim - 2)
    if self.padding == 'same':
      padding = tuple(same_padding(x.shape[i + 1], k[i], s[i]) for i in range(len(k)))
    else:
      padding = fixed_padding(k)
    if self.explicit_padding and max(k) > 1:
      # TF1's own form: pad, then a VALID conv. Same numbers; XLA's cost analysis then counts
      # the padded taps too, which is the paper's FLOP convention (see rs/tools/summary.py).
      x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
      padding = 'VALID'
    groups = x.shape[-1] if self.depthwise else 1
    x = self.conv(groups if self.depthwise else self.features, k, strides=s,
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
    s = jnp.mean(x.astype(jnp.float32), axis=spatial_axes(x), keepdims=True).astype(self.dtype)
    ones = (1,) * (x.ndim - 2)
    s = nn.Conv(self.squeeze_features, ones, kernel_init=self.kernel_init,
                dtype=self.dtype, name='reduce')(s)
    s = nn.Conv(x.shape[-1], ones, kernel_init=self.kernel_init,
                dtype=self.dtype, name='expand')(self.activation(s))
    return x * nn.sigmoid(s)


class SelfGating(nn.Module):
  """S3D-G feature gating (tensorflow/models `SelfGating`, the 3D ResNets' last block of each
  stage): the mean over time and space, a 1x1x1 conv with bias at full width (no squeeze, no
  BN), a sigmoid, rescale."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x.astype(jnp.float32), axis=spatial_axes(x), keepdims=True).astype(self.dtype)
    s = nn.Conv(x.shape[-1], (1,) * (x.ndim - 2), dtype=self.dtype,
                kernel_init=nn.initializers.truncated_normal(0.01), name='gate')(s)
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
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def pooled_head(x, num_classes: int, dropout_rate: float, deterministic: bool, dtype,
                kernel_init: Callable) -> jax.Array:
  """Every family's classifier, called inside the network: global average pool over space (and
  time) in float32, dropout, a dense layer with bias named 'head'."""
  x = jnp.mean(x.astype(jnp.float32), axis=spatial_axes(x)).astype(dtype)
  x = nn.Dropout(dropout_rate, deterministic=deterministic)(x)
  return nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name='head')(x)


class Bottleneck(nn.Module):
  """Post-activation bottleneck, stride on the 3x3 conv ("v1.5"), as TF1 `bottleneck_block`,
  and on clips as tensorflow/models `BottleneckBlock3D`.

  Order: 1x1 -> 3x3 (stride) -> 1x1 (4x, BN gamma zero-initialised) -> [self-gating] -> SE ->
  stochastic depth -> + shortcut -> ReLU. On clips (`temporal_kernel` set) the first conv is
  temporal, kt x 1 x 1, the 3x3 is 1 x 3 x 3, and strides are spatial (1, s, s).
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
  temporal_kernel: int | None = None  # clips: the first conv's extent in time; None: images
  self_gating: bool = False  # SelfGating before SE (3D ResNets: each stage's last block)

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.features
    clips = self.temporal_kernel is not None
    if clips != (x.ndim == 5):
      raise ValueError(f'{self.name}: temporal_kernel={self.temporal_kernel} for an input of '
                       f'shape {x.shape}: set it for clips (5 axes) only')
    one = (1, 1, 1) if clips else 1
    strides = (1, self.strides, self.strides) if clips else self.strides
    shortcut = x
    if self.projection:
      shortcut_strides = strides
      if self.resnetd_shortcut and self.strides == 2:
        # ResNet-D: average first, so the 1x1 conv sees every input pixel.
        shortcut = avg_pool_2x2(x)
        shortcut_strides = one
      shortcut = self.conv_bn(out_features, one, strides=shortcut_strides, activation=None,
                              name='shortcut')(shortcut)

    y = self.conv_bn(self.features, (self.temporal_kernel, 1, 1) if clips else 1,
                     name='conv1')(x)
    y = self.conv_bn(self.features, (1, 3, 3) if clips else 3, strides=strides, name='conv2')(y)
    y = self.conv_bn(out_features, one, activation=None, zero_init_scale=self.zero_init_last_bn,
                     name='conv3')(y)
    if self.self_gating:
      y = SelfGating(dtype=self.dtype, name='gating')(y)
    if self.se_ratio > 0:
      y = SqueezeExcite(max(1, int(out_features * self.se_ratio)), dtype=self.dtype, name='se')(y)
    y = StochasticDepth(self.drop_rate, self.deterministic)(y)
    return nn.relu(y + shortcut)


# Rematerialisation (jax.checkpoint) of the bottleneck stages, to fit bigger per-device batches:
# the backward pass recomputes what the forward did not keep. 'block': each bottleneck is one
# checkpoint, 'stage': each stage. The policy says what is kept inside it: 'convolutions' the
# outputs of every convolution (and matmul), so only BN, activations, SE and pooling are
# recomputed (cheap elementwise work); 'nothing' only the checkpoint's input, so the backward
# pass runs the forward again (about a third more compute, the most memory saved). 'auto' is
# 'block' on a CPU, where it is faster as well as smaller (RS-50@160 training 1.20-1.34x none,
# RS-350@256 1.74x: the recomputed element-wise work fuses into the backward pass instead of
# activations going to memory and back; docs/performance.md), and 'none' on accelerators.
REMATS = ('auto', 'none', 'block', 'stage')
REMAT_POLICIES = {'convolutions': jax.checkpoint_policies.dots_saveable,
                  'nothing': jax.checkpoint_policies.nothing_saveable}


def resolve_remat(remat: str) -> str:
  """The remat a network runs with: 'auto' is 'block' on a CPU and 'none' elsewhere."""
  return by_backend.resolve('model.remat', remat, REMATS, 'block', 'none')


def remat_of(network) -> str:
  """The remat `network` runs with: its 'auto' resolved, 'none' for a family without remat
  (EfficientNet)."""
  return resolve_remat(getattr(network, 'remat', 'none'))


def check_remat(network) -> None:
  resolve_remat(network.remat)  # validates
  if network.remat_policy not in REMAT_POLICIES:
    raise ValueError(f'model.remat_policy={network.remat_policy!r}: use one of '
                     f'{tuple(REMAT_POLICIES)}')


def bottleneck_stages(network: nn.Module, x, block_fields: Callable[[int, int], dict]):
  """`x` through the network's stages of Bottlenecks (`network.stage_sizes`; block j of stage
  i, 0-based, gets `block_fields(i, j)` and is named stage{i+1}_block{j+1}), rematerialised
  as `network.remat` and `network.remat_policy` say. The parameters' names do not change."""
  policy, remat = REMAT_POLICIES[network.remat_policy], resolve_remat(network.remat)
  block = nn.remat(Bottleneck, policy=policy) if remat == 'block' else Bottleneck
  for i, num_blocks in enumerate(network.stage_sizes):

    def stage(module, x, i=i, num_blocks=num_blocks):
      for j in range(num_blocks):
        x = block(**block_fields(i, j), name=f'stage{i + 1}_block{j + 1}', parent=module)(x)
      return x

    x = (nn.remat(stage, policy=policy) if remat == 'stage' else stage)(network, x)
  return x
