"""EfficientNet B0-B7 (Tan & Le, 2019) as the official TF code builds it (tensorflow/tpu
efficientnet_model.py), from the blocks ResNet-RS is made of (rs/models/layers.py): ConvBN with
swish and TF 'SAME' padding, Squeeze-Excite, stochastic depth ("drop connect"), the pooled head.

A variant is B0's seven stages with its width and depth coefficients: channels
round_filters(c * width) (multiples of 8, never 10% below), repeats ceil(depth * r). The
EfficientNet-RS variants of the ResNet-RS paper (section 7.2) are the same networks at other
resolutions, so they are these models with another image size (configs/efficientnet_rs.py).
"""
import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rs.models import convolution, layers

# B0's stages: (repeats, kernel, stride, expand ratio, output channels); the stem has 32.
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280

# Per variant: (width, depth, resolution, dropout before the classifier) (official table).
VARIANTS = {
    'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3), 'b4': (1.4, 1.8, 380, 0.4), 'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5), 'b7': (2.0, 3.1, 600, 0.5),
}

# Official initialisers: convs normal with std sqrt(2 / fan_out) (for a depthwise kernel the
# "out" is its depth multiplier 1, which is JAX's fan_in of the (k, k, 1, C) kernel); the
# classifier uniform(+-1/sqrt(classes)).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
depthwise_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
dense_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_out', 'uniform')


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
  """Channels scaled by `width`, to a multiple of `divisor`, never more than 10% below."""
  scaled = channels * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def stages(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
  """The variant's stages: (repeats, kernel, stride, expand, output channels)."""
  return [(round_repeats(r, depth), k, s, e, round_filters(c, width))
          for r, k, s, e, c in B0_STAGES]


class MBConv(nn.Module):
  """The inverted residual block: [1x1 expand] -> kxk depthwise (stride) -> SE -> 1x1 project
  (linear) -> [stochastic depth + input, when the shape is kept]."""
  features: int
  kernel_size: int
  conv_bn: layers.ModuleDef  # with swish and 'SAME' bound
  depthwise_bn: layers.ModuleDef
  strides: int = 1
  expand_ratio: int = 6
  se_ratio: float = 0.25
  drop_rate: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    inputs, channels = x, x.shape[-1]
    if self.expand_ratio != 1:
      x = self.conv_bn(channels * self.expand_ratio, 1, name='expand')(x)
    x = self.depthwise_bn(x.shape[-1], self.kernel_size, strides=self.strides, depthwise=True,
                          name='depthwise')(x)
    if self.se_ratio > 0:  # squeezed to a share of the block's input, not of the expansion
      x = layers.SqueezeExcite(max(1, int(channels * self.se_ratio)), dtype=self.dtype,
                               activation=nn.swish, kernel_init=conv_kernel_init, name='se')(x)
    x = self.conv_bn(self.features, 1, activation=None, name='project')(x)
    if self.strides == 1 and channels == self.features:
      x = layers.StochasticDepth(self.drop_rate, self.deterministic)(x) + inputs
    return x


class EfficientNet(nn.Module):
  """EfficientNet at any width and depth coefficient (B0: 1.0, 1.0)."""
  width_multiplier: float = 1.0
  depth_multiplier: float = 1.0
  num_classes: int = 1000
  se_ratio: float = 0.25
  # The top drop-connect rate: block i of N drops its branch with rate * i / N (official 0.2).
  stochastic_depth_rate: float = 0.2
  dropout_rate: float = 0.2
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  fixed_bn_statistics: frozenset = frozenset()
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  explicit_padding: bool = False
  conv_lowering: str = 'auto'

  # What rs.models.architecture reads: fields that change the parameters' shapes, and those
  # that change inference outputs too.
  input_rank = 4  # (batch, height, width, channels)
  shape_fields = ('width_multiplier', 'depth_multiplier', 'se_ratio')
  inference_fields = shape_fields + ('bn_epsilon',)

  def __post_init__(self):
    convolution.resolve(self.conv_lowering)  # validates
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (in `dtype`) for images `x` of shape (batch, height, width, channels)."""
    conv, norm = layers.conv_and_norm(self, train)
    conv_bn = functools.partial(layers.ConvBN, conv=functools.partial(
        conv, kernel_init=conv_kernel_init), norm=norm, activation=nn.swish, padding='same',
                                explicit_padding=self.explicit_padding)
    depthwise_bn = functools.partial(conv_bn, conv=functools.partial(
        conv, kernel_init=depthwise_kernel_init))
    w = functools.partial(round_filters, width=self.width_multiplier)
    x = x.astype(self.dtype)

    x = conv_bn(w(STEM), 3, strides=2, name='stem')(x)
    layout = stages(self.width_multiplier, self.depth_multiplier)
    total, index = sum(r for r, *_ in layout), 0
    for i, (repeats, kernel, stride, expand, features) in enumerate(layout):
      for j in range(repeats):
        x = MBConv(features, kernel, conv_bn, depthwise_bn, strides=stride if j == 0 else 1,
                   expand_ratio=expand, se_ratio=self.se_ratio,
                   drop_rate=self.stochastic_depth_rate * index / total,
                   deterministic=not train, dtype=self.dtype,
                   name=f'stage{i + 1}_block{j + 1}')(x)
        index += 1
    x = conv_bn(w(HEAD), 1, name='head_conv')(x)
    return layers.pooled_head(x, self.num_classes, self.dropout_rate, not train, self.dtype,
                              dense_kernel_init)
