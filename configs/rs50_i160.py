"""ResNet-RS-50 at 160px on ImageNet, the official resnetrs50_i160 recipe.

Official top-1: 78.8 (tensorflow/tpu README); the released checkpoint re-evaluated:
78.9 / 94.3 top-1 / top-5. 350 epochs at batch 4096 (109,475 steps), bfloat16.
Time: not yet measured by rs on a TPU; see docs/performance.md.

  python -m rs.main --config=configs/rs50_i160.py --workdir=gs://BUCKET/rs50_i160
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs50'
  return c
