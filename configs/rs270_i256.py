"""ResNet-RS-270 at 256px on ImageNet, the official resnetrs270_i256 recipe.

Official top-1: 83.8 (tensorflow/tpu README); the released checkpoint re-evaluated:
83.8 / 96.7 top-1 / top-5. 350 epochs at batch 4096 (109,475 steps), bfloat16.
Time: not yet measured by rs on a TPU; see docs/performance.md.

  python -m rs.main --config=configs/rs270_i256.py --workdir=gs://BUCKET/rs270_i256
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs270'
  c.data.image_size = 256
  c.model.stochastic_depth_rate = 0.1
  c.data.randaugment_magnitude = 15
  return c
