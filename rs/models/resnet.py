"""The ResNet(-RS) network: a stem, four stages of bottlenecks, a pooled linear head.

Every ResNet-RS change to a plain ResNet is a switch, so the paper's baselines and ablations
are the same code: `stem='classic', stem_pool='max', se_ratio=0, resnetd_shortcut=False` is
a vanilla ResNet v1.5.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rs.models import convolution, layers

STEM_TYPES = ('deep', 'classic')
STEM_POOLS = ('conv', 'max', 'none')


def scaled(channels: int, width_multiplier: float) -> int:
  """Channels after the width multiplier, never below 1."""
  return max(1, int(round(channels * width_multiplier)))


def check_layout(network) -> None:
  """ValueError unless the 2D or 3D ResNet's stem, conv lowering, remat and four stages are
  valid."""
  layers.check_remat(network)
  if network.stem not in STEM_TYPES:
    raise ValueError(f'model.stem={network.stem!r}: use one of {STEM_TYPES}')
  convolution.resolve(network.conv_lowering)  # validates
  if len(network.stage_sizes) != 4 or min(network.stage_sizes) < 1:
    raise ValueError(f'stage_sizes={tuple(network.stage_sizes)}: give four block counts >= 1')


class ResNet(nn.Module):
  """ResNet-RS (defaults) or any ResNet in between, for any depth, width and resolution."""
  stage_sizes: Sequence[int]
  num_classes: int = 1000
  width_multiplier: float = 1.0
  # 'deep' (ResNet-D): three 3x3 convs 32/32/64, the first with stride 2.
  # 'classic': one 7x7/2 conv with 64 channels.
  stem: str = 'deep'
  # What downsamples after the stem convs: 'conv' (official RS: a 3x3/2 conv, 64 channels),
  # 'max' (3x3/2 max-pool, classic ResNet), 'none' (the paper text's description of ResNet-D).
  stem_pool: str = 'conv'
  se_ratio: float = 0.25
  resnetd_shortcut: bool = True
  zero_init_last_bn: bool = True
  stochastic_depth_rate: float = 0.0
  dropout_rate: float = 0.25
  bn_momentum: float = 0.0
  bn_epsilon: float = 1e-5
  # BN layers, by path ('stage1_block1/conv1/bn'), whose statistics stay fixed in training
  # (rs.programs sets it for the frozen parts of a linear probe).
  fixed_bn_statistics: frozenset = frozenset()
  # Examples per BN statistics group in training (TPU: the per-core batch); None: the batch.
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  # Pad with jnp.pad before VALID convs (TF1's form) instead of padding inside the conv. Same
  # numbers; rs.tools.summary uses it so XLA counts padded taps, the paper's FLOP convention.
  explicit_padding: bool = False
  # How convolutions are lowered (rs/models/convolution.py): 'native' XLA convolutions,
  # 'pointwise' (1x1 as matmuls; faster on XLA:CPU), 'matmul' (also stride 2 as
  # space-to-depth), or 'auto' (pointwise on CPU, native elsewhere).
  conv_lowering: str = 'auto'
  # Rematerialisation of the stages: 'none', 'block' or 'stage', keeping the convolution
  # outputs or nothing (rs.models.layers.REMATS, REMAT_POLICIES), or 'auto' (block on CPU,
  # none elsewhere). Same numbers, less memory.
  remat: str = 'auto'
  remat_policy: str = 'convolutions'

  # What rs.models.architecture reads: fields that change the parameters' names or shapes
  # (and hence params and FLOPs), and those that change inference outputs too. Dropout,
  # stochastic depth, BN momentum and groups, dtype and the conv lowering do not.
  input_rank = 4  # (batch, height, width, channels)
  shape_fields = ('stage_sizes', 'width_multiplier', 'se_ratio', 'stem', 'stem_pool',
                  'resnetd_shortcut')
  inference_fields = shape_fields + ('bn_epsilon',)

  def __post_init__(self):
    check_layout(self)
    if self.stem_pool not in STEM_POOLS:
      raise ValueError(f'model.stem_pool={self.stem_pool!r}: use one of {STEM_POOLS}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (in `dtype`) for images `x` of shape (batch, height, width, channels)."""
    conv, norm = layers.conv_and_norm(self, train)
    conv_bn = functools.partial(layers.ConvBN, norm=norm, explicit_padding=self.explicit_padding,
                                conv=functools.partial(conv, kernel_init=layers.conv_kernel_init))
    w = functools.partial(scaled, width_multiplier=self.width_multiplier)
    x = x.astype(self.dtype)

    if self.stem == 'deep':
      x = conv_bn(w(32), 3, strides=2, name='stem1')(x)
      x = conv_bn(w(32), 3, name='stem2')(x)
      x = conv_bn(w(64), 3, name='stem3')(x)
    else:
      x = conv_bn(w(64), 7, strides=2, name='stem1')(x)
    if self.stem_pool == 'conv':
      x = conv_bn(w(64), 3, strides=2, name='stem_pool')(x)
    elif self.stem_pool == 'max':
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

    x = layers.bottleneck_stages(self, x, lambda i, j: dict(
        features=w(64 * 2**i), conv_bn=conv_bn, strides=2 if i > 0 and j == 0 else 1,
        projection=j == 0, se_ratio=self.se_ratio, resnetd_shortcut=self.resnetd_shortcut,
        zero_init_last_bn=self.zero_init_last_bn,
        # Official rule: a constant rate per stage, stage_no/5 of the top rate, C2..C5 = 2..5.
        drop_rate=self.stochastic_depth_rate * (i + 2) / 5, deterministic=not train,
        dtype=self.dtype))

    return layers.pooled_head(x, self.num_classes, self.dropout_rate, not train, self.dtype,
                              layers.dense_kernel_init)
