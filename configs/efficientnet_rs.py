"""EfficientNet-RS (ResNet-RS paper, section 7.2): EfficientNet's widths and depths at slowly
growing resolutions, with RandAugment by resolution, and otherwise the official recipe.

  python -m rs.main --config=configs/efficientnet_rs.py:b5 --workdir=gs://BUCKET/efficientnet_rs_b5

The paper gives its resolutions only in a figure, which no public code or table reproduces, so
rs states its rule: the resolution grows as the square root of EfficientNet's growth from
224 px, rounded to a multiple of 32 (ResNet-RS's own sizes run 160-320):
    B0 224, B1 224, B2 256, B3 256, B4 288, B5 320, B6 352, B7 352.
RandAugment (2 layers) magnitude 10 up to 224 px, 15 up to 320, 20 above (the paper's rule).
"""
import math

from configs import efficientnet as official
from rs.models import efficientnet


def resolution(variant: str) -> int:
  """sqrt of EfficientNet's resolution growth over B0's 224, to a multiple of 32."""
  native = efficientnet.VARIANTS[variant][2]
  return int(round(224 * math.sqrt(native / 224) / 32) * 32)


def randaugment_magnitude(image_size: int) -> int:
  """The paper's rule for EfficientNet-RS (also rs.tools.sweep's EfficientNet points)."""
  return 10 if image_size <= 224 else 15 if image_size <= 320 else 20


def get_config(variant: str = 'b0'):
  c = official.get_config(variant)
  c.data.image_size = resolution(variant)
  c.data.randaugment_layers = 2
  c.data.randaugment_magnitude = randaugment_magnitude(c.data.image_size)
  return c
