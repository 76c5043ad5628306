"""An EfficientNet-B0 variant on Fashion-MNIST with EfficientNet's own recipe, scaled down: the
real-data check of that recipe (scripts/efficientnet_fashion_mnist.sh, docs/models.md).

  python -m rs.main --config=configs/efficientnet_fashion_mnist.py:2 --workdir=/tmp/rs_b0_fmnist

The argument after the colon is the run's length in epochs (default 28, the embedded default's).
The network is B0 at width 0.25 and depth 0.5 (0.20M parameters), the B0 variant whose training
step on this machine's CPU costs about what ResNet-RS-26 at width 0.5 costs (4.9M parameters):
XLA:CPU's depthwise convolutions are slow, so equal cost buys ResNet-RS a far larger network.
The recipe is configs/efficientnet.py's (TF1 RMSProp, x0.97 exponential decay, L2 1e-5, label
smoothing 0.1, the variant's dropout 0.2, drop connect 0.2, BN 0.99/1e-3) with the data of
configs/fashion_mnist.py; the decay is scaled to the run: 50 stairs over it, each x0.915, so the
learning rate falls by EfficientNet's total factor 0.97^(350 / 2.4) = 0.012 over any length
(2.4 x EPOCHS / 350 epochs per x0.97 would be a few steps per stair, and the staircase's
rounding to whole steps would change the total).
"""
from configs import efficientnet, fashion_mnist


def get_config(epochs: str = '28'):
  try:
    length = float(epochs)
  except ValueError:
    length = -1.0
  if not length > 0:
    raise ValueError(f'{epochs!r}: give the run length in epochs after the colon, e.g. '
                     '--config=configs/efficientnet_fashion_mnist.py:2')
  c = fashion_mnist.get_config()
  official = efficientnet.get_config('b0')
  c.optimizer = official.optimizer
  efficientnet.set_network(c, 'b0')
  c.model.width_multiplier = 0.25
  c.model.depth_multiplier = 0.5
  stairs = 50
  c.optimizer.decay_epochs = length / stairs
  c.optimizer.decay_rate = official.optimizer.decay_rate ** (350 / 2.4 / stairs)
  c.train_epochs = length
  return c
