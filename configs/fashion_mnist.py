"""The embedded default: a small ResNet-RS on Fashion-MNIST, trained on a laptop CPU.

The network is ResNet-RS-14 (one bottleneck per stage, 3x4+2 = 14 layers) at width 0.25: SE,
ResNet-D stem and shortcuts, zero-init last BN, all as in the big models; 0.69M parameters.

Real data, offline: the four original Fashion-MNIST files (Debian `dataset-fashion-mnist`),
or tfds's download where a network is present. Same trainer and recipe as the ImageNet
configs (cosine LR, momentum, label smoothing, EMA, SE + ResNet-D), scaled down.

  python -m rs.main --config=configs/fashion_mnist.py --workdir=/tmp/rs_fmnist

Expected (README, measured): see "The embedded default" there for accuracy and wall time.
"""
from configs import base

FASHION_MNIST_MEAN = (0.2860 * 255,)
FASHION_MNIST_STD = (0.3530 * 255,)


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs14'
  c.model.width_multiplier = 0.25
  c.model.dropout_rate = 0.0  # a 0.7M-parameter model underfits; it needs no dropout

  c.data.name = 'fashion_mnist'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.image_size = 32  # 28 -> 32: the stem's stride 4 then leaves 8x8 feature maps
  c.data.mean = FASHION_MNIST_MEAN
  c.data.std = FASHION_MNIST_STD
  c.data.augment = 'pad_crop'
  c.data.crop_padding = 2
  c.data.randaugment_layers = 0

  c.batch_size = 256
  c.eval_batch_size = 1000
  # Weight decay and epochs chosen on a held-out minival (the last 6,000 training images), never
  # on the test split: scripts/tune_fashion_mnist.sh, results in docs/fashion_mnist_tuning.md.
  # Short run, small data: a stronger decay than ImageNet's 4e-5.
  c.train_epochs = 28.0
  c.warmup_epochs = 1.0
  c.optimizer.base_learning_rate = 0.2
  c.optimizer.weight_decay = 5e-4
  c.ema_decay = 0.999  # ~1000-step horizon: the run is only ~6,600 steps
  c.dtype = 'float32'

  c.log_every_steps = 50
  c.eval_every_epochs = 4.0
  c.checkpoint_every_steps = 500
  return c
