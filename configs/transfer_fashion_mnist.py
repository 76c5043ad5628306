"""The paper's transfer study (section 7.4) in small: does RS training transfer better?

A vanilla ResNet (no SE, no ResNet-D) is pretrained on Fashion-MNIST twice, at equal epochs:
- `standard`: the supervised baseline of the paper's comparison: step decay, weight decay 1e-4,
  no RandAugment, label smoothing or dropout;
- `rs`: the paper's transfer subset of the RS recipe (configs/transfer_resnet152.py at this
  scale): RandAugment (2 layers, magnitude 10: the RS rule up to 160 px), label smoothing 0.1,
  dropout 0.25, weight decay 4e-5, cosine decay; no stochastic depth, no EMA.
Both recipes are the paper's, fixed before any run: nothing upstream is tuned.

Each exported network then transfers to two other real datasets that ship with installed
packages, as a linear probe (frozen backbone and BN statistics) and by full fine-tuning:
- `digits_probe`, `digits_finetune`: scikit-learn's handwritten digits (8x8, 10 classes);
- `lfw_faces_probe`, `lfw_faces_finetune`: scikit-image's LFW subset, face or not (25x25).
Their learning rates were chosen on minival slices of the training splits (docs/transfer.md).

  python -m rs.main --config=configs/transfer_fashion_mnist.py:rs --workdir=/tmp/up_rs
  python -m rs.export --workdir=/tmp/up_rs --out=/tmp/up_rs_weights
  python -m rs.main --config=configs/transfer_fashion_mnist.py:digits_probe \
      --config.init_from=/tmp/up_rs_weights --workdir=/tmp/rs_digits_probe

The whole study, 3 seeds: `bash scripts/transfer_study.sh`; results in docs/transfer.md.
"""
from configs import base, fashion_mnist

UPSTREAM = ('standard', 'rs')
DOWNSTREAM = {  # dataset: (train split, eval split, training epochs, batch size)
    'digits': ('train', 'test', 30.0, 64),
    'lfw_faces': ('train', 'test', 60.0, 32),
}
MODES = ('probe', 'finetune')
# Peak learning rates (at batch 256, scaled to the batch) of the downstream runs, chosen on
# the minival slices below for both upstream recipes together (docs/transfer.md).
# Grids: probe 0.1 ... 25.6, fine-tuning 0.0125 ... 3.2, in steps of 4x. Faces' minival (40
# images) ties most rates; a tie keeps the lowest.
LEARNING_RATES = {('digits', 'probe'): 25.6, ('digits', 'finetune'): 0.8,
                  ('lfw_faces', 'probe'): 0.1, ('lfw_faces', 'finetune'): 0.05}
MINIVAL = {'digits': ('train[:1000]', 'train[1000:]'),
           'lfw_faces': ('train[:120]', 'train[120:]')}


def get_config(row: str = 'rs'):
  c = base.get_config()
  c.model.name = 'resnet14'  # vanilla ResNet v1.5, one bottleneck per stage
  c.model.width_multiplier = 0.25
  c.model.stochastic_depth_rate = 0.0
  c.data.image_size = 32
  c.data.mean = fashion_mnist.FASHION_MNIST_MEAN  # downstream too: the network's own input
  c.data.std = fashion_mnist.FASHION_MNIST_STD
  c.data.augment = 'pad_crop'
  c.data.crop_padding = 2
  c.data.randaugment_layers = 0
  c.ema_decay = 0.0
  c.dtype = 'float32'
  c.warmup_epochs = 1.0
  c.log_every_steps = 50
  if row in UPSTREAM:
    return _upstream(c, row)
  dataset, _, mode = row.rpartition('_')
  if dataset not in DOWNSTREAM or mode not in MODES:
    rows = [*UPSTREAM, *(f'{d}_{m}' for d in DOWNSTREAM for m in MODES)]
    raise ValueError(f'configs/transfer_fashion_mnist.py:{row}: use one of {", ".join(rows)}')
  return _downstream(c, dataset, mode)


def _upstream(c, row):
  c.data.name = 'fashion_mnist'
  c.data.train_split, c.data.eval_split = 'train', 'test'
  c.batch_size, c.eval_batch_size = 256, 1000
  c.train_epochs = 15.0
  c.optimizer.base_learning_rate = 0.2
  c.eval_every_epochs = 4.0
  c.checkpoint_every_steps = 500
  if row == 'standard':
    c.optimizer.schedule = 'step'
    c.optimizer.weight_decay = 1e-4
    c.label_smoothing = 0.0
    c.model.dropout_rate = 0.0
  else:
    c.optimizer.schedule = 'cosine'
    c.optimizer.weight_decay = 4e-5
    c.label_smoothing = 0.1
    c.model.dropout_rate = 0.25
    c.data.randaugment_layers = 2
    c.data.randaugment_magnitude = 10
  return c


def _downstream(c, dataset, mode):
  """Transfer of exported upstream weights (set init_from): a new classifier; the backbone
  frozen with its BN statistics (probe) or trained at the same rate (finetune)."""
  c.init_from = ''
  c.init_skip = '^head/'
  c.data.name = dataset
  c.data.train_split, c.data.eval_split, c.train_epochs, c.batch_size = DOWNSTREAM[dataset]
  c.eval_batch_size = 200 if dataset == 'digits' else 40
  c.optimizer.schedule = 'cosine'
  c.optimizer.base_learning_rate = LEARNING_RATES[dataset, mode]
  c.optimizer.weight_decay = 1e-4 if mode == 'finetune' else 0.0
  c.label_smoothing = 0.0
  c.model.dropout_rate = 0.0
  if mode == 'probe':
    c.optimizer.param_groups = ('^head/:1', '.*:0')
  c.eval_every_epochs = c.train_epochs
  c.checkpoint_every_steps = 1000
  return c
