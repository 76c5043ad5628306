"""3D ResNet-RS on Kinetics-400 (paper section 7.5, Table 6), as tensorflow/models' released
R3D-RS-50 config and its Kinetics-400 experiment factory train it.

  python -m rs.main --config=configs/kinetics400.py:rs50 --workdir=gs://BUCKET/k400_rs50 \
    --config.data.data_dir=ROOT

ROOT/train/CLASS/ and ROOT/validation/CLASS/ hold the videos: video files, folders of frame
images, or both (docs/video.md); a tfds dataset with a Video feature works as well
(--config.data.name=NAME). Kinetics is not in tfds's catalogue and cannot be downloaded by rs.

The row after the colon is one of Table 6's (K400 top-1 / top-5 as reported):
- `baseline`: the R3D-50 baseline network (7x7 stem, CVRL's temporal kernels, no SE) with the
  older recipe: 200 epochs, weight decay 1e-4, BN momentum 0.9, no label smoothing, no
  stochastic depth, no EMA. Paper: 73.4 (Model Garden's config of this network: 77.0 / 93.0).
- `recipe`: the same network with the RS recipe: 350 epochs, weight decay 4e-5, label
  smoothing 0.1, stochastic depth 0.1, EMA 0.9999, BN momentum 0. Paper: 77.4.
- `rs50` (default): 3D ResNet-RS-50, the RS recipe plus ResNet-D stem and SE. Paper 78.2 /
  93.7; the released config.
- `rs101`, `rs152`, `rs200`: deeper 3D ResNet-RS (Model Garden: 79.5, 79.9, 80.4 top-1).
  Only the RS-50 recipe is public; rs trains these with it unchanged.

Common to all (facts sheet 1.7-1.8): 32 frames at stride 2, 224 px training crops
(Inception-style random-resized crop, area 0.08-1, aspect 0.5-2, one box and flip per clip),
10 clips x 3 crops of 256 px for evaluation with probabilities averaged; pixels / 255 (no
mean or std); dropout 0.5; Nesterov momentum 0.9; peak LR 0.8 at batch 1024 (0.2 x batch /
256), 5 warm-up epochs, cosine to 0; bfloat16. An epoch is the 215,570 training videos /
1024 = 210.5 steps: 350 epochs = 73,681 steps (the reference fixes 73,682), 200 = 42,104.
Durations are in epochs, so a copy of Kinetics with fewer videos (they vanish from YouTube)
keeps the recipe's 350 epochs.
Time: not measured by rs (no Kinetics and no TPU here); the reference trains on TPU v3-128.
"""
from configs import base

ROWS = ('baseline', 'recipe', 'rs50', 'rs101', 'rs152', 'rs200')


def get_config(row: str = 'rs50'):
  if row not in ROWS:
    raise ValueError(f'row {row!r}: give one of {", ".join(ROWS)}, e.g. '
                     '--config=configs/kinetics400.py:rs50')
  c = base.get_config()
  c.model.name = 'resnet3d50' if row in ('baseline', 'recipe') else f'resnet3d_{row}'
  c.model.dropout_rate = 0.5
  c.model.bn_epsilon = 1e-5

  d = c.data
  d.name = 'folder'
  d.data_dir = ''  # the user's: --config.data.data_dir=ROOT
  d.train_split = 'train'
  d.eval_split = 'validation'
  d.frames = 32
  d.frame_stride = 2
  d.image_size = 224
  d.eval_image_size = 256
  d.eval_clips = 10
  d.eval_crops = 3
  d.mean = (0.0, 0.0, 0.0)
  d.std = (255.0, 255.0, 255.0)
  d.randaugment_layers = 0
  d.shuffle_buffer = 1024  # whole videos: fewer, larger records than images

  c.batch_size = 1024
  c.eval_batch_size = 64
  c.warmup_epochs = 5.0
  c.optimizer.name = 'momentum'
  c.optimizer.base_learning_rate = 0.2  # x 1024 / 256 = 0.8
  c.optimizer.schedule = 'cosine'
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.dtype = 'bfloat16'
  c.eval_every_epochs = 10.0

  if row == 'baseline':
    c.train_epochs = 200.0
    c.optimizer.weight_decay = 1e-4
    c.label_smoothing = 0.0
    c.model.stochastic_depth_rate = 0.0
    c.model.bn_momentum = 0.9
    c.ema_decay = 0.0
  else:
    c.train_epochs = 350.0
    c.optimizer.weight_decay = 4e-5
    c.label_smoothing = 0.1
    c.model.stochastic_depth_rate = 0.1
    c.model.bn_momentum = 0.0
    c.ema_decay = 0.9999
  return c
