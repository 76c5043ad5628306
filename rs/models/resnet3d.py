"""3D ResNet-RS for video (paper section 7.5), built as tensorflow/models' `resnet_3d_rs` builds
it, from the same blocks as the 2D network (rs/models/layers.py, on clips of shape
(batch, time, height, width, channels)).

- Stem 'deep' (the 3D ResNet-D stem, "v1"): a kt x 3 x 3 conv with stride (st, 2, 2) and 32
  channels, then 1 x 3 x 3 convs to 32 and 64, then a 3 x 3 max-pool with stride (pt, 2, 2)
  (temporal extent 3 where pt > 1, else 1). 'classic' ("v0", the R3D baseline): one kt x 7 x 7
  conv to 64, stride (st, 2, 2), then the same pool. kt = `stem_temporal_kernel` (5), st =
  `stem_temporal_stride` (2), pt = `pool_temporal_stride` (1 for RS, 2 for the baseline).
- Four stages of bottlenecks (widths 64 ... 512, 4x out) whose first conv is temporal: block j
  of stage i has temporal kernel `temporal_kernels[i][j % len(temporal_kernels[i])]`. RS: 1, 1,
  3, 3 per stage; the baseline (CVRL): (3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1).
  Spatial stride 2 on the 3x3 of each stage's first block from C3 on; time keeps T / st.
- Self-gating in each stage's last block, then SE (ratio of the block's output width), then
  stochastic depth at rate r x stage/5 (stages 2..5), then + shortcut and ReLU. The shortcut is
  a strided 1x1x1 conv + BN; `resnetd_shortcut` (off in the public code, which puts ResNet-D
  in the stem only) average-pools each frame 2x2 first, as the 2D network.
- BN gamma starts at 1 everywhere (Keras), unless `zero_init_last_bn`.
- Head: mean over time and space, dropout (0.5), dense with Keras's U(-0.05, 0.05) kernel.
- Padding: Keras 'same' (TF 'SAME', layers.same_padding) for every conv and the pool, as the
  public code; `padding='fixed'` pads as the 2D ResNet-RS (TF1's fixed padding), so a 2D
  checkpoint inflated into this network (rs.transfer) computes exactly what it did per frame.

Every switch has its baseline value, so the paper's Table 6 (baseline, + recipe, + ResNet-D and
SE) is a set of configs. Parameter counts and the rule behind them: docs/video.md.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rs.models import layers
from rs.models.resnet import check_layout, scaled

# Temporal kernels per stage, cycled over its blocks.
RS_TEMPORAL_KERNELS = ((1,), (1,), (3,), (3,))
CVRL_TEMPORAL_KERNELS = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))
dense_kernel_init = nn.initializers.uniform(0.1)  # Keras 'random_uniform': U(0, 0.1) - 0.05


def _centred(init, shift):
  """`init` moved by `shift` (Flax's uniform(s) draws from [0, s))."""
  return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) + jnp.asarray(shift, dtype)


class ResNet3D(nn.Module):
  """3D ResNet-RS (defaults) or the R3D baseline, for any depth, width and clip shape."""
  stage_sizes: Sequence[int]
  num_classes: int = 400
  width_multiplier: float = 1.0
  stem: str = 'deep'
  stem_temporal_kernel: int = 5
  stem_temporal_stride: int = 2
  pool_temporal_stride: int = 1
  temporal_kernels: Sequence[Sequence[int]] = RS_TEMPORAL_KERNELS
  self_gating: bool = True
  se_ratio: float = 0.25
  resnetd_shortcut: bool = False
  zero_init_last_bn: bool = False
  stochastic_depth_rate: float = 0.1
  dropout_rate: float = 0.5
  bn_momentum: float = 0.0
  bn_epsilon: float = 1e-5
  fixed_bn_statistics: frozenset = frozenset()
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  explicit_padding: bool = False
  conv_lowering: str = 'auto'
  padding: str = 'same'  # 'same' (Keras, the public 3D code) | 'fixed' (TF1, the 2D network)
  remat: str = 'auto'  # as rs.models.resnet.ResNet's
  remat_policy: str = 'convolutions'

  input_rank = 5  # (batch, time, height, width, channels)
  shape_fields = ('stage_sizes', 'width_multiplier', 'se_ratio', 'stem', 'stem_temporal_kernel',
                  'temporal_kernels', 'self_gating', 'resnetd_shortcut')
  inference_fields = shape_fields + ('bn_epsilon', 'stem_temporal_stride',
                                     'pool_temporal_stride', 'padding')

  def __post_init__(self):
    check_layout(self)
    if self.padding not in ('same', 'fixed'):
      raise ValueError(f"model.padding={self.padding!r}: use 'same' or 'fixed'")
    if len(self.temporal_kernels) != 4 or not all(
        len(k) and all(int(t) >= 1 for t in k) for k in self.temporal_kernels):
      raise ValueError(f'model.temporal_kernels={self.temporal_kernels}: give four tuples of '
                       'temporal kernel sizes >= 1, one tuple per stage (cycled over its blocks)')
    for field in ('stem_temporal_kernel', 'stem_temporal_stride', 'pool_temporal_stride'):
      if int(getattr(self, field)) < 1:
        raise ValueError(f'model.{field}={getattr(self, field)}: give 1 or more')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (in `dtype`) for clips `x` of shape (batch, time, height, width, channels)."""
    if x.ndim != 5:
      raise ValueError(f'a 3D ResNet takes clips (batch, time, height, width, channels), got '
                       f'shape {x.shape}')
    conv, norm = layers.conv_and_norm(self, train)
    conv_bn = functools.partial(layers.ConvBN, norm=norm, padding=self.padding,
                                explicit_padding=self.explicit_padding,
                                conv=functools.partial(conv, kernel_init=layers.conv_kernel_init))
    w = functools.partial(scaled, width_multiplier=self.width_multiplier)
    x = x.astype(self.dtype)

    kt, st = self.stem_temporal_kernel, self.stem_temporal_stride
    if self.stem == 'deep':
      x = conv_bn(w(32), (kt, 3, 3), strides=(st, 2, 2), name='stem1')(x)
      x = conv_bn(w(32), (1, 3, 3), name='stem2')(x)
      x = conv_bn(w(64), (1, 3, 3), name='stem3')(x)
    else:
      x = conv_bn(w(64), (kt, 7, 7), strides=(st, 2, 2), name='stem1')(x)
    pt = self.pool_temporal_stride
    window = (3 if pt > 1 else 1, 3, 3)
    pads = (layers.fixed_padding(window) if self.padding == 'fixed' else
            tuple(layers.same_padding(x.shape[i + 1], window[i], s)
                  for i, s in enumerate((pt, 2, 2))))
    x = nn.max_pool(x, window, (pt, 2, 2), padding=pads)  # pads with -inf

    def block_fields(i, j):
      kernels = self.temporal_kernels[i]
      return dict(features=w(64 * 2**i), conv_bn=conv_bn, strides=2 if i > 0 and j == 0 else 1,
                  projection=j == 0, se_ratio=self.se_ratio,
                  resnetd_shortcut=self.resnetd_shortcut,
                  zero_init_last_bn=self.zero_init_last_bn,
                  drop_rate=self.stochastic_depth_rate * (i + 2) / 5, deterministic=not train,
                  dtype=self.dtype, temporal_kernel=int(kernels[j % len(kernels)]),
                  self_gating=self.self_gating and j == self.stage_sizes[i] - 1)

    x = layers.bottleneck_stages(self, x, block_fields)

    return layers.pooled_head(x, self.num_classes, self.dropout_rate, not train, self.dtype,
                              _centred(dense_kernel_init, -0.05))
