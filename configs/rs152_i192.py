"""ResNet-RS-152 at 192px on ImageNet, the official resnetrs152_i192 recipe.

Official top-1: 82.0 (tensorflow/tpu README); the released checkpoint re-evaluated:
82.1 / 95.9 top-1 / top-5. 350 epochs at batch 4096 (109,475 steps), bfloat16.
Time: not yet measured by rs on a TPU; see docs/performance.md.

  python -m rs.main --config=configs/rs152_i192.py --workdir=gs://BUCKET/rs152_i192
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs152'
  c.data.image_size = 192
  c.data.randaugment_magnitude = 15
  return c
