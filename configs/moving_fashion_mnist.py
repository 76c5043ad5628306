"""A small 3D ResNet-RS on moving Fashion-MNIST (docs/video.md): the proof that the video path
learns from time, on real images, on a CPU.

  python -m rs.tools.moving_dataset --out=/tmp/moving
  python -m rs.main --config=configs/moving_fashion_mnist.py --workdir=/tmp/moving_3d \
    --config.data.data_dir=/tmp/moving

The class is the direction in which a Fashion-MNIST image moves (8 classes, chance 12.5%).
`:3d` (default) is a 3D ResNet-RS of RS-14's layout (one block per stage) at width 0.25 on
clips of 8 frames; `:2d` is the same network with every temporal kernel and stride 1 (the 2D
ResNet-RS, frame by frame) on clips of one frame, which cannot tell the directions apart.
The same recipe and steps for both. Flips are off: a mirror changes the direction. Evaluation:
2 clips x 1 crop (the frames are square) of every video of data.eval_split: 'minival' (clips
of held-out training images) for choices, --config.data.eval_split=test to report. Results
(3 seeds each) and time: docs/video.md: 3D 99.48% test top-1, 2D 12.07% (chance 12.5%), ~10
and ~4 minutes per run on one core.
"""
from configs import base

NETWORKS = ('3d', '2d')


def get_config(network: str = '3d'):
  if network not in NETWORKS:
    raise ValueError(f'network {network!r}: give 3d or 2d, e.g. '
                     '--config=configs/moving_fashion_mnist.py:2d')
  c = base.get_config()
  c.model.name = 'resnet3d_rs50'
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width_multiplier = 0.25
  c.model.dropout_rate = 0.2
  c.model.stochastic_depth_rate = 0.0

  d = c.data
  d.name = 'folder'
  d.data_dir = ''  # written by rs.tools.moving_dataset
  d.train_split = 'train'
  d.eval_split = 'minival'
  d.frames = 8
  d.frame_stride = 1
  d.image_size = 32
  d.eval_clips = 2
  d.eval_crops = 1
  d.flip = False
  d.randaugment_layers = 0
  d.mean = (72.9,) * 3  # Fashion-MNIST's pixel mean and deviation (the canvas is mostly 0)
  d.std = (90.0,) * 3
  if network == '2d':
    d.frames = 1
    c.model.temporal_kernels = ((1,), (1,), (1,), (1,))
    c.model.stem_temporal_kernel = 1
    c.model.stem_temporal_stride = 1

  c.batch_size = 32
  c.eval_batch_size = 50
  c.train_epochs = 6.0
  c.warmup_epochs = 0.5
  c.optimizer.base_learning_rate = 0.8  # x 32 / 256 = 0.1 peak
  c.optimizer.weight_decay = 1e-4
  c.ema_decay = 0.999
  c.dtype = 'float32'  # CPU
  c.log_every_steps = 50
  c.eval_every_epochs = 2.0
  c.checkpoint_every_steps = 500
  return c
