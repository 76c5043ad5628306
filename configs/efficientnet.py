"""EfficientNet B0-B7 with the official recipe (tensorflow/tpu efficientnet, as released).

  python -m rs.main --config=configs/efficientnet.py:b3 --workdir=gs://BUCKET/efficientnet_b3

The variant after the colon (b0 ... b7) sets the network, its resolution and its dropout. The
recipe: TF1 RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3 inside the root, ms from 1), peak
LR 0.016 x batch / 256 reached by a 5-epoch linear warmup, then x0.97 every 2.4 epochs counted
from step 0; L2 1e-5 on all but BatchNorm; BN momentum 0.99, epsilon 1e-3; drop connect 0.2
(linear over the blocks); label smoothing 0.1; EMA 0.9999; 350 epochs at batch 2048. The code's
default augmentation (inception crop and flip, no AutoAugment or RandAugment); the eval crop
S / (S + 32), bicubic. Official top-1 (AutoAugment checkpoints): B0 77.1 ... B7 84.3
(docs/models.md). Time: not measured by rs on a TPU.
"""
from configs import base
from rs.models import efficientnet


def set_network(c, variant: str) -> None:
  """`c.model` as the official EfficientNet-`variant`: the network, its dropout, drop connect
  0.2 (linear over the blocks), BN momentum 0.99 and epsilon 1e-3. Also rs.tools.sweep's
  EfficientNet points."""
  if variant not in efficientnet.VARIANTS:
    raise ValueError(f'variant {variant!r}: give one of {", ".join(efficientnet.VARIANTS)}, '
                     'e.g. --config=configs/efficientnet.py:b3')
  c.model.name = f'efficientnet_{variant}'
  c.model.dropout_rate = efficientnet.VARIANTS[variant][3]
  c.model.stochastic_depth_rate = 0.2
  c.model.bn_momentum = 0.99
  c.model.bn_epsilon = 1e-3


def get_config(variant: str = 'b0'):
  c = base.get_config()
  set_network(c, variant)
  c.data.image_size = efficientnet.VARIANTS[variant][2]
  c.data.randaugment_layers = 0
  c.batch_size = 2048
  c.train_epochs = 350.0
  c.warmup_epochs = 5.0
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.base_learning_rate = 0.016
  c.optimizer.schedule = 'exponential'
  c.optimizer.decay_rate = 0.97
  c.optimizer.decay_epochs = 2.4
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 1e-5
  return c
