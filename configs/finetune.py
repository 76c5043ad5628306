"""Fine-tune saved weights on your own images: a new classifier, the backbone trained slower.

Starts from a weights directory (rs.export of a run, or rs.convert of timm's ResNet-RS) and a
class-folder dataset, ROOT/train/CLASS/*.jpg and ROOT/validation/CLASS/*.jpg. The classifier
is re-initialised for the new classes (init_skip), and trains 10x faster than the backbone
(optimizer.param_groups); `--config.optimizer.param_groups="('^head/:1', '.*:0')"` freezes the
backbone instead, its BN statistics included (a linear probe: no backward pass through the
backbone, so a step costs little more than its forward). The transfer recipe of the paper
(section 7.4): RandAugment, label smoothing, dropout, lowered weight decay, cosine; no
stochastic depth, no EMA.

  python -m rs.export --workdir=gs://BUCKET/rs50_i160 --out=/tmp/rs50_weights   # or rs.convert
  python -m rs.main --config=configs/finetune.py --workdir=/tmp/ft \
      --config.init_from=/tmp/rs50_weights --config.model.name=resnetrs50 \
      --config.data.data_dir=ROOT

model.name (and any architecture override) must describe the saved network: a mismatch is an
error that lists the parameters that differ.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnetrs50'
  c.model.stochastic_depth_rate = 0.0
  c.model.dropout_rate = 0.25
  c.init_from = ''  # set: a directory written by rs.export or rs.convert
  c.init_skip = '^head/'
  c.optimizer.param_groups = ('^head/:10',)
  c.optimizer.base_learning_rate = 0.01  # 1/10 of pretraining's: the backbone moves slowly
  c.optimizer.weight_decay = 1e-5
  c.label_smoothing = 0.1
  c.ema_decay = 0.0

  c.data.name = 'folder'
  c.data.data_dir = ''  # set: ROOT with ROOT/train/CLASS/*.jpg, ROOT/validation/CLASS/*.jpg
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.image_size = 160
  c.data.randaugment_layers = 2
  c.data.randaugment_magnitude = 10
  c.dtype = 'float32'  # CPUs and GPUs without bf16 units; 'bfloat16' on TPU

  c.batch_size = 64
  c.eval_batch_size = 64
  c.train_epochs = 20.0
  c.warmup_epochs = 1.0
  c.eval_every_epochs = 5.0
  c.log_every_steps = 10
  c.checkpoint_every_steps = 200
  return c
