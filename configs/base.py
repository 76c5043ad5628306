"""The paper's ResNet-RS training recipe: the base every configs/*.py file starts from.

Values follow the released official configs (tensorflow/tpu resnet_rs/configs/*.yaml) and
resnet_main.py; where the paper and that code disagree, the code wins and the paper's choice
is an option (see docs/design.md and the facts sheet, section 7).

Alone it trains ResNet-RS-50 at 160px on ImageNet (the rs50_i160 settings):
  python -m rs.main --config=configs/base.py --workdir=gs://BUCKET/rs50
"""
import ml_collections
from ml_collections.config_dict import placeholder

from rs.data.sources import IMAGENET_MEAN, IMAGENET_STD


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnetrs50'  # any name in rs.models.MODELS
  c.model.dropout_rate = 0.25
  c.model.stochastic_depth_rate = 0.0  # top rate r; stages C2..C5 get 0.4r/0.6r/0.8r/1.0r
  c.model.bn_momentum = 0.0  # official: BN keeps the latest batch's statistics, EMA averages
  c.model.bn_epsilon = 1e-5
  # BN statistics over groups of this many examples; None: the per-device batch (TPU per-core
  # BN, as the official training). Set it to batch_size for BN synchronised over all devices.
  c.model.bn_group_size = placeholder(int)
  # 'auto': XLA's convolutions on TPU/GPU, 1x1 as matmuls on CPU ('pointwise'); 'matmul' also
  # runs stride-2 convs as space-to-depth ones. Same numbers, different programs.
  c.model.conv_lowering = 'auto'
  # Rematerialisation of the ResNets' stages (less memory, same numbers): 'none', 'block',
  # 'stage' or 'auto' (unset: block on CPU, where it is also faster, none on accelerators);
  # remat_policy 'convolutions' (keep their outputs) or 'nothing' (rs.models.layers).
  c.model.remat = placeholder(str)
  c.model.remat_policy = placeholder(str)
  # Architecture overrides; None keeps the registered model's value.
  c.model.width_multiplier = placeholder(float)
  c.model.depth_multiplier = placeholder(float)  # EfficientNet's depth coefficient
  c.model.stage_sizes = placeholder(tuple)  # e.g. (3, 4, 6, 3)
  c.model.se_ratio = placeholder(float)  # 0 turns Squeeze-Excite off
  c.model.stem = placeholder(str)  # 'deep' (ResNet-D) or 'classic' (7x7)
  c.model.stem_pool = placeholder(str)  # 'conv' (official), 'max', 'none' (paper text)
  c.model.resnetd_shortcut = placeholder(bool)
  c.model.zero_init_last_bn = placeholder(bool)
  # 3D networks only (rs/models/resnet3d.py): temporal kernels per stage (cycled over its
  # blocks), the stem's temporal kernel and stride, the pool's temporal stride, self-gating.
  c.model.temporal_kernels = placeholder(tuple)  # e.g. ((1,), (1,), (3,), (3,))
  c.model.stem_temporal_kernel = placeholder(int)
  c.model.stem_temporal_stride = placeholder(int)
  c.model.pool_temporal_stride = placeholder(int)
  c.model.self_gating = placeholder(bool)

  c.data = ml_collections.ConfigDict()
  # A tfds name (prepared in data_dir, or prepared on first use: imagenet2012 from manual_dir),
  # or 'folder': your own images in data_dir/SPLIT/CLASS/*.jpg|png (splits are folder names).
  c.data.name = 'imagenet2012'
  c.data.data_dir = placeholder(str)  # tfds data_dir (local or gs://); None: tfds default
  c.data.manual_dir = placeholder(str)  # where manually downloaded files lie (imagenet2012)
  c.data.image_size = 160
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.mean = IMAGENET_MEAN  # per channel, on the 0..255 scale
  c.data.std = IMAGENET_STD
  # 'inception_crop' (+ flip, RandAugment): streamed with tf.data, the ImageNet recipe;
  # 'pad_crop' (+ flip): small images held in memory (Fashion-MNIST).
  c.data.augment = 'inception_crop'
  c.data.resize_method = 'bicubic'  # TF1's (official); 'bilinear' is the TF2 code's choice
  c.data.crop_padding = 4  # 'pad_crop': the largest shift, in pixels
  # Eval: center crop min(H, W) * S / (S + eval_crop_padding) (the release-time rule), or a
  # fixed eval_crop_fraction (the official code since Nov 2021: 0.875); bicubic resize to S.
  c.data.eval_crop_padding = 32
  c.data.eval_crop_fraction = placeholder(float)
  c.data.randaugment_layers = 2  # N; 0 turns RandAugment off
  c.data.randaugment_magnitude = 10  # M
  # TF1's Contrast blends towards (pixel count)/256 instead of the mean; 'true' uses the mean.
  c.data.randaugment_contrast_mean = 'official'
  c.data.shuffle_buffer = 16 * 1024  # encoded records; per-epoch order from (seed, epoch)
  c.data.prefetch_batches = 2  # batches the host prepares ahead of the device
  c.data.threads = placeholder(int)  # tf.data's private thread pool; None: the host's CPUs
  # Keep decoded images in host memory after the first epoch: for small datasets only (ImageNet
  # decoded is ~110 GB per host copy); crops and augmentation stay random every epoch.
  c.data.cache_decoded = False
  c.data.bad_images = 'skip'  # undecodable images: 'skip' (logged, counted) | 'stop' (error)
  # Channels of the network's input: 1 (grayscale) or 3 (RGB); None: the dataset's own (1 for
  # Fashion-MNIST, 3 for decoded files). Gray and color files mix; data.mean and data.std
  # give one value per channel. Weights for the other count are adapted (rs.transfer).
  c.data.channels = placeholder(int)
  # Video (a 3D network; rs.data.video_pipeline): clips of `frames` frames `frame_stride` apart
  # from class folders of videos (files or folders of frames) or a tfds dataset with a Video
  # feature; evaluation averages eval_clips x eval_crops views of side eval_image_size.
  c.data.frames = placeholder(int)  # None: images
  c.data.eval_image_size = placeholder(int)  # video only; None: image_size
  c.data.flip = True  # video only: random left-right flips (off where they change the class)
  c.data.frame_stride = 2
  c.data.eval_clips = 10
  c.data.eval_crops = 3
  c.data.min_video_frames = 1  # shorter videos are skipped and counted; 1: wrap their frames
  # Semi-supervised (paper section 7.3, docs/semi_supervised.md): images a teacher labeled
  # (rs.pseudo_label's output) mixed into every step. batch_size stays the labeled images per
  # step, each step adds ratio x batch_size pseudo-labeled ones, and epochs count the labeled
  # set. Labeled and pseudo-labeled images share one forward (BN, dropout, stochastic depth).
  c.data.pseudo = ml_collections.ConfigDict()
  c.data.pseudo.dir = placeholder(str)  # an rs.pseudo_label output directory
  c.data.pseudo.ratio = 0.0  # pseudo-labeled per labeled image (Noisy Student: 1-3); 0: off
  c.data.pseudo.targets = 'soft'  # the teacher's probabilities | 'hard': its argmax, smoothed
  c.data.pseudo.temperature = 1.0  # soft targets p^(1/T), renormalised
  c.data.pseudo.loss_weight = placeholder(float)  # None: ratio (every image weighs the same)
  c.data.pseudo.fingerprint = placeholder(str)  # optional: the pseudo set's data fingerprint

  c.batch_size = 4096  # global, over all devices and hosts
  c.eval_batch_size = 1024
  # Durations: set exactly one of *_epochs / *_steps (steps win when set).
  c.train_epochs = 350.0  # 350 x 1,281,167 / 4096 = 109,475 steps, as the official configs
  c.train_steps = placeholder(int)
  c.warmup_epochs = 5.0
  c.warmup_steps = placeholder(int)

  c.optimizer = ml_collections.ConfigDict()
  # 'momentum' (SGD, ResNet-RS) or 'rmsprop_tf' (TF1 RMSProp, EfficientNet).
  c.optimizer.name = 'momentum'
  c.optimizer.base_learning_rate = 0.1  # peak LR = base x batch_size / 256
  # 'cosine' (paper, TF2), 'step' (released TF1 code) or 'exponential' (EfficientNet's
  # x decay_rate every decay_epochs, staircase).
  c.optimizer.schedule = 'cosine'
  c.optimizer.decay_rate = 0.97
  c.optimizer.decay_epochs = 2.4
  c.optimizer.rmsprop_decay = 0.9
  c.optimizer.rmsprop_epsilon = 1e-3  # inside the square root, as TF1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True  # TF1: MomentumOptimizer(use_nesterov=True); TF2: False
  c.optimizer.weight_decay = 4e-5  # L2 on every parameter but BatchNorm's (TF1 semantics)
  # Learning-rate multipliers by parameter name, 'REGEX:MULTIPLIER', first match wins, others
  # x1: ('^head/:10',) trains a new head 10x faster; ('^head/:1', '.*:0') freezes the rest.
  c.optimizer.param_groups = ()
  # Frozen parts (multiplier 0) keep their BN statistics too: those layers normalise with the
  # stored averages in training, as in evaluation (a true linear probe). False: they normalise
  # with batch statistics and store them (bn_momentum), while their scale and bias stay fixed.
  c.optimizer.freeze_bn_statistics = True
  c.label_smoothing = 0.1
  # Effective decay min(d, (1+t)/(10+t)); 0: no EMA (it would equal the raw weights), and
  # evaluations score the raw weights alone.
  c.ema_decay = 0.9999

  # Weights to start from (a directory written by rs.convert), when the workdir has no
  # checkpoint yet; the optimizer and step start afresh.
  c.init_from = placeholder(str)
  # Fine-tuning: a regex of parameters not to load, kept freshly initialised (e.g. '^head/' for
  # a classifier with another number of classes); any other difference is an error.
  c.init_skip = placeholder(str)

  # A step whose loss or gradient is NaN/inf is never applied. 'stop': training then stops with
  # an error naming the step and the last good checkpoint; 'skip': it goes on, and the log and
  # TensorBoard count the skipped steps (train/nonfinite_steps).
  c.on_nonfinite = 'stop'

  c.dtype = 'bfloat16'  # compute dtype; parameters, BN statistics and loss stay float32

  c.log_every_steps = 100
  c.eval_every_epochs = 10.0
  c.eval_every_steps = placeholder(int)
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  return c
