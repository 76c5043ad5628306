"""The paper's transfer-learning pretraining (section 7.4): a vanilla ResNet-152 with RS training.

To compare supervised pretraining with self-supervised representations (SimCLR), the paper
trains a plain ResNet - no Squeeze-Excite, no ResNet-D stem or shortcuts - with the RS
recipe minus the parts that do not transfer: RandAugment, label smoothing, dropout, the
lowered weight decay and the cosine schedule stay; stochastic depth and the weight EMA go.
The epoch count of that run is not in rs's reference facts; 350 (the RS recipe) is a field.

  python -m rs.main --config=configs/transfer_resnet152.py --workdir=gs://BUCKET/r152_transfer

Then fine-tune the result on a downstream dataset with configs/finetune.py.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.name = 'resnet152'  # the registry's vanilla ResNet v1.5: stem, shortcuts, no SE
  c.model.stochastic_depth_rate = 0.0
  c.model.dropout_rate = 0.25
  c.data.image_size = 224
  c.data.randaugment_layers = 2
  c.data.randaugment_magnitude = 15  # the RS rule above 160 px (rs.tools.sweep.regularization)
  c.label_smoothing = 0.1
  c.optimizer.weight_decay = 4e-5
  c.optimizer.schedule = 'cosine'
  c.ema_decay = 0.0  # no EMA: evaluations score the raw weights alone
  return c
