"""A seconds-long smoke test of the whole trainer: the embedded default shrunk to almost nothing.

The Fashion-MNIST config at width 1/8, one block per stage, 24px images, the first 3,200
training images (100 steps per epoch; resizing all 60,000 would take longer than the 6 steps
of batch 32 it trains for) and 500 test images. The tests, the kill/resume soak
(scripts/soak.sh) and quick checks of a new machine use it.

  python -m rs.main --config=configs/tiny.py --workdir=/tmp/rs_tiny

Expected: 41 s in all on the 2-core development VM (measured with `time`; about half of it
compiling, the rest imports, data loading and saving); the accuracy means nothing.
"""
from configs import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.model.width_multiplier = 0.125
  # 24px: the smallest size near 16 that rs.validate accepts (each stride-2 layer sees >= 2x2).
  c.data.image_size = 24
  c.data.train_split = 'train[:3200]'
  c.data.eval_split = 'test[:500]'  # 500 = 7 x 64 + 52: the last eval batch is padded
  c.batch_size = 32
  c.eval_batch_size = 64
  c.train_steps = 6
  c.warmup_steps = 2
  c.eval_every_steps = 6
  c.log_every_steps = 1
  c.checkpoint_every_steps = 3
  c.keep_checkpoints = 5
  return c
