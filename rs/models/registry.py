"""One registry of model names; every variant is created by `create_model(name, **overrides)`.

Block layouts per stage (C2..C5). 50-420 are the official ones (tensorflow/tpu resnet_model.py).
14 is rs's small layout, one block per stage (3*4 + 2 = 14 layers: the embedded default and the
tests). The scaling study's depths 26, 300 and 400 are in the paper's appendix table, which no
public code or config reproduces, so rs chooses them by a stated rule:
  26:  (2, 2, 2, 2), the standard ResNet-26; 3*8 + 2 = 26 exactly.
  300: (4, 32, 59, 4), linear interpolation of C3 and C4 between RS-270 (4, 29, 53, 4) and
       RS-350 (4, 36, 72, 4) at (300-270)/(350-270), C2/C5 kept at 4 as in every RS >= 270;
       3*99 + 2 = 299.
  400: (4, 42, 83, 4), the same rule between RS-350 and RS-420 (4, 44, 87, 4); 3*133 + 2 = 401.
Any other layout is `create_model('resnetrs50', stage_sizes=(...))`.

EfficientNet B0-B7 (`efficientnet_b0` ...) are registered the same way, with their official
width and depth coefficients and dropout (rs/models/efficientnet.py).

3D networks for video (rs/models/resnet3d.py): `resnet3d_rsD` (3D ResNet-RS: tensorflow/models'
R3D-RS at D in 50 ... 420, with the 2D layouts above) and `resnet3dD` (the R3D baseline of the
paper's Table 6: CVRL's temporal kernels, the 7x7 stem, no SE, no stochastic depth).
"""
import difflib

import jax.numpy as jnp

from rs.errors import UserError
from rs.models import efficientnet
from rs.models import resnet3d
from rs.models.efficientnet import EfficientNet
from rs.models.resnet import ResNet
from rs.models.resnet3d import ResNet3D


class UnknownModelError(UserError, ValueError):
  """A model name that is not registered."""


# Compute dtypes by config name; parameters, BN statistics and the loss stay float32.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

STAGE_SIZES = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    270: (4, 29, 53, 4),
    300: (4, 32, 59, 4),
    350: (4, 36, 72, 4),
    400: (4, 42, 83, 4),
    420: (4, 44, 87, 4),
}

# A plain ResNet v1.5 (the paper's baseline): every ResNet-RS switch off.
VANILLA = dict(stem='classic', stem_pool='max', se_ratio=0.0, resnetd_shortcut=False)

EFFICIENTNETS = {f'efficientnet_{v}': dict(width_multiplier=w, depth_multiplier=d,
                                              dropout_rate=dropout)
                 for v, (w, d, _, dropout) in efficientnet.VARIANTS.items()}

# The R3D baseline (tensorflow/models `ResNet3D50`, CVRL's layout): the 'v0' 7x7 stem with a
# temporal stride-2 pool, CVRL's temporal kernels, self-gating; no SE, no stochastic depth.
R3D_BASELINE = dict(stem='classic', pool_temporal_stride=2,
                    temporal_kernels=resnet3d.CVRL_TEMPORAL_KERNELS, se_ratio=0.0,
                    stochastic_depth_rate=0.0)
RESNET3DS = {
    **{f'resnet3d_rs{d}': dict(stage_sizes=s) for d, s in STAGE_SIZES.items() if d >= 50},
    **{f'resnet3d{d}': dict(stage_sizes=s, **R3D_BASELINE) for d, s in STAGE_SIZES.items()
       if d in (50, 101)},
}

MODELS = {
    **{f'resnetrs{d}': dict(stage_sizes=s) for d, s in STAGE_SIZES.items()},
    **{f'resnet{d}': dict(stage_sizes=s, **VANILLA) for d, s in STAGE_SIZES.items()},
    **EFFICIENTNETS,
    **RESNET3DS,
}


def family(name: str) -> type:
  """The network class a registered name builds."""
  if name in EFFICIENTNETS:
    return EfficientNet
  return ResNet3D if name in RESNET3DS else ResNet


def fields_of(name: str) -> set[str]:
  """The fields create_model(name, ...) accepts."""
  return set(family(name).__dataclass_fields__) - {'parent', 'name'}


def create_model(name: str, **overrides):
  """The registered network `name`, with any of its fields overridden (width, dtype, ...)."""
  check_name(name)
  fields = {**MODELS[name], **overrides}
  foreign = sorted(set(fields) - fields_of(name))
  if foreign:
    raise UnknownModelError(f'model.{foreign[0]} does not apply to {name} (family '
                            f'{family(name).__name__}): leave it unset')
  if 'stage_sizes' in fields:
    fields['stage_sizes'] = stage_tuple(fields['stage_sizes'])
  return family(name)(**fields)


def check_name(name: str) -> None:
  """UnknownModelError, with the closest registered name, unless `name` is registered."""
  if name not in MODELS:
    close = difflib.get_close_matches(str(name), MODELS, n=1)
    depths = ', '.join(str(d) for d in STAGE_SIZES)
    raise UnknownModelError(f'unknown model {name!r}; '
                            + (f'did you mean {close[0]}? ' if close else '')
                            + f'registered: resnetrsD (ResNet-RS) and resnetD, D in {depths}; '
                            'efficientnet_b0 ... efficientnet_b7; resnet3d_rsD (D >= 50), '
                            'resnet3d50 and resnet3d101 (video)')


def stage_tuple(stage_sizes) -> tuple[int, ...] | None:
  """Block counts as the network stores them: a tuple of ints (configs, JSON and flags give
  lists or strings of digits)."""
  return None if stage_sizes is None else tuple(int(n) for n in stage_sizes)
