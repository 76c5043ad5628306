"""EfficientNet B0-B7 in rs's registry: the official layouts and padding, its configs, and
training through the same trainer as ResNet-RS. (Parameter counts: tests/test_models.py;
logits against timm's TF ports: tests/test_convert.py; TF1 RMSProp: tests/test_optim.py.)"""
import numpy as np
import pytest

from rs import cli, sharding, train, validate
from rs.errors import ConfigError, UserError
from rs.models import efficientnet, layers

# efficientnet_noisy_student.md 1.4: stem, (repeats x channels) per stage, head.
LAYOUTS = {
    'b0': (32, '1x16 2x24 2x40 3x80 3x112 4x192 1x320', 1280),
    'b1': (32, '2x16 3x24 3x40 4x80 4x112 5x192 2x320', 1280),
    'b2': (32, '2x16 3x24 3x48 4x88 4x120 5x208 2x352', 1408),
    'b3': (40, '2x24 3x32 3x48 5x96 5x136 6x232 2x384', 1536),
    'b4': (48, '2x24 4x32 4x56 6x112 6x160 8x272 2x448', 1792),
    'b5': (48, '3x24 5x40 5x64 7x128 7x176 9x304 3x512', 2048),
    'b6': (56, '3x32 6x40 6x72 8x144 8x200 11x344 3x576', 2304),
    'b7': (64, '4x32 7x48 7x80 10x160 10x224 13x384 4x640', 2560),
}


@pytest.mark.parametrize('variant', sorted(LAYOUTS))
def test_layouts_follow_the_official_rounding(variant):
  width, depth, _, _ = efficientnet.VARIANTS[variant]
  stem, stages, head = LAYOUTS[variant]
  assert efficientnet.round_filters(efficientnet.STEM, width) == stem
  assert efficientnet.round_filters(efficientnet.HEAD, width) == head
  assert ' '.join(f'{r}x{c}' for r, _, _, _, c in efficientnet.stages(width, depth)) == stages


def test_same_padding_is_tfs():
  """efficientnet_noisy_student.md 1.8: even inputs pad (0, 1) for k3 and (1, 2) for k5 at
  stride 2, odd ones evenly; stride 1 pads (k-1)/2 on both sides."""
  assert layers.same_padding(224, 3, 2) == (0, 1)
  assert layers.same_padding(56, 5, 2) == (1, 2)
  assert layers.same_padding(65, 5, 2) == (2, 2)
  assert layers.same_padding(33, 3, 2) == (1, 1)
  assert layers.same_padding(15, 5, 1) == (2, 2)


def test_the_configs_load_by_variant_and_refuse_others():
  b3 = cli.load_config_file('configs/efficientnet.py:b3')
  assert (b3.model.name, b3.data.image_size, b3.model.dropout_rate) == ('efficientnet_b3', 300,
                                                                         0.3)
  assert b3.optimizer.name == 'rmsprop_tf' and b3.optimizer.schedule == 'exponential'
  rs_b5 = cli.load_config_file('configs/efficientnet_rs.py:b5')
  assert (rs_b5.data.image_size, rs_b5.data.randaugment_magnitude) == (320, 15)
  assert cli.load_config_file('configs/efficientnet_rs.py:b7').data.randaugment_magnitude == 20
  with pytest.raises(UserError, match="variant 'b9': give one of b0, b1"):
    cli.load_config_file('configs/efficientnet.py:b9')


def test_a_resnet_field_on_an_efficientnet_is_one_line(tiny):
  config = tiny()
  config.model.name = 'efficientnet_b0'
  config.model.stem = 'classic'
  with pytest.raises(ConfigError, match=r"^model.stem='classic': efficientnet_b0 has no such "
                     r'field \(family EfficientNet\): leave --config.model.stem unset$'):
    validate.check_config(config, sharding.create_mesh())


def test_an_efficientnet_trains_with_its_recipe_in_the_trainer(tmp_path, tiny):
  """B0 at a quarter width and depth on Fashion-MNIST: TF1 RMSProp, the exponential schedule,
  drop connect, BN momentum 0.99 - the same trainer, checkpoints and evaluation as ResNet-RS."""
  config = tiny(train_steps=4, warmup_steps=1, eval_every_steps=4)
  config.model.name = 'efficientnet_b0'
  config.model.width_multiplier = 0.25
  config.model.depth_multiplier = 0.25
  config.model.stochastic_depth_rate = 0.2
  config.model.bn_momentum = 0.99
  config.model.bn_epsilon = 1e-3
  config.optimizer.name = 'rmsprop_tf'
  config.optimizer.base_learning_rate = 0.016
  config.optimizer.schedule = 'exponential'
  config.optimizer.nesterov = False
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert np.isfinite(result['loss']) and result['num_examples'] == 500
  assert 0 <= result['top1'] <= 1

  # Exported, evaluated and predicted the same way as ResNet-RS: the export describes the
  # EfficientNet (its coefficients), rs.evaluate scores it as training scored the EMA, and
  # its inference function serves it (uint8 images in, probabilities out).
  from rs import evaluate, export
  description = export.export(str(tmp_path / 'run'), str(tmp_path / 'export'))
  assert description.model == 'efficientnet_b0'
  assert description.architecture == {'width_multiplier': 0.25, 'depth_multiplier': 0.25}
  scores = evaluate.evaluate_weights(str(tmp_path / 'export'))
  assert scores['top1'] == pytest.approx(result['ema_top1'], abs=1e-6)
  model, variables, description = export.load(str(tmp_path / 'export'))
  images = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 1), np.uint8)
  out = export.inference_fn(model, variables, description)(images)
  np.testing.assert_allclose(np.sum(out['probabilities'], axis=-1), 1.0, rtol=1e-5)
  assert out['logits'].shape == (3, 10)
