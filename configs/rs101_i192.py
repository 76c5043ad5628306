"""ResNet-RS-101 at 192px on ImageNet, the official resnetrs101_i192 recipe.

Official top-1: 81.2 (tensorflow/tpu README); the released checkpoint re-evaluated:
81.3 / 95.6 top-1 / top-5. 350 epochs at batch 4096 (109,475 steps), bfloat16.
Time: not yet measured by rs on a TPU; see docs/performance.md.

  python -m rs.main --config=configs/rs101_i192.py --workdir=gs://BUCKET/rs101_i192
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs101'
  c.data.image_size = 192
  c.data.randaugment_magnitude = 15
  return c
