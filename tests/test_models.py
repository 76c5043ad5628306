"""The ResNet-RS family against the official parameter counts and analytic expectations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs.models import MODELS, create_model, layers, official

# Official trainable parameter counts, 1000 classes (facts sheet 3.3; equal to timm's).
OFFICIAL_PARAMS = official.PARAMS


def variables_of(model, size=64, channels=3):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False))


def num_params(model, **kw):
  return sum(x.size for x in jax.tree.leaves(variables_of(model, **kw)['params']))


@pytest.mark.parametrize('name', sorted(OFFICIAL_PARAMS))
def test_official_parameter_counts(name):
  assert num_params(create_model(name)) == OFFICIAL_PARAMS[name]


def test_classic_resnet50_has_torchvision_parameter_count():
  # Every switch off gives ResNet-50 v1.5: 25,557,032 parameters (torchvision/timm resnet50).
  assert num_params(create_model('resnet50')) == 25_557_032


def test_output_shapes_and_dtypes():
  model = create_model('resnetrs50', num_classes=7, width_multiplier=0.25,
                       stage_sizes=(1, 1, 1, 1), dtype=jnp.bfloat16)
  x = jnp.ones((2, 64, 48, 3))
  v = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  y = jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)
  assert y.shape == (2, 7) and y.dtype == jnp.bfloat16
  # Parameters and BN statistics stay float32 under bfloat16 compute.
  assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}


def se_params(stage_sizes, width=1.0):
  """Two 1x1 convs with bias per block: C -> C/4 -> C with C = 4 x 64 x 2^i x width."""
  total = 0
  for i, n in enumerate(stage_sizes):
    c = 4 * round(64 * 2**i * width)
    s = c // 4
    total += n * (c * s + s + s * c + c)
  return total


@pytest.mark.parametrize('name', ['resnetrs50', 'resnetrs152'])
def test_squeeze_excite_switch_changes_params_analytically(name):
  delta = num_params(create_model(name)) - num_params(create_model(name, se_ratio=0.0))
  assert delta == se_params(MODELS[name]['stage_sizes'])


def test_resnetd_stem_switch_changes_params_analytically():
  # Deep stem: 3x3 convs 3->32->32->64 plus BN (gamma, beta); classic: one 7x7 conv 3->64.
  deep = 3 * 9 * 32 + 32 * 9 * 32 + 32 * 9 * 64 + 2 * (32 + 32 + 64)
  classic = 3 * 49 * 64 + 2 * 64
  a = num_params(create_model('resnetrs50', stem='deep', stem_pool='max'))
  b = num_params(create_model('resnetrs50', stem='classic', stem_pool='max'))
  assert a - b == deep - classic
  # The official stem replaces the max-pool by a 3x3/2 conv 64->64 with BN.
  c = num_params(create_model('resnetrs50', stem='deep', stem_pool='conv'))
  assert c - a == 64 * 9 * 64 + 2 * 64


def test_resnetd_shortcut_switch_adds_no_params_but_averages():
  kw = dict(width_multiplier=0.25, stage_sizes=(1, 1, 1, 1), num_classes=10, dropout_rate=0.0)
  on = create_model('resnetrs50', **kw)
  off = create_model('resnetrs50', resnetd_shortcut=False, **kw)
  assert num_params(on) == num_params(off)
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  v = jax.jit(lambda x: on.init(jax.random.key(0), x, train=False))(x)
  # The last BN gamma starts at 0, which would hide the branches; set every gamma to 1.
  params = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.ones_like(a) if p[-1].key == 'scale' else a, v['params'])
  out = lambda m: jax.jit(lambda p, x: m.apply(
      {'params': p, 'batch_stats': v['batch_stats']}, x, train=True,
      mutable=['batch_stats'])[0])(params, x)
  assert np.all(np.isfinite(out(on)))
  assert not np.allclose(out(on), out(off), atol=1e-3)


def test_vanilla_switches_are_the_registered_baseline():
  a = create_model('resnet200')
  b = create_model('resnetrs200', stem='classic', stem_pool='max', se_ratio=0.0,
                   resnetd_shortcut=False)
  assert num_params(a) == num_params(b)


def test_width_multiplier_and_stage_sizes():
  model = create_model('resnetrs50', width_multiplier=0.5, stage_sizes=(1, 2, 1, 1))
  v = variables_of(model)['params']
  assert v['stage4_block1']['conv3']['conv']['kernel'].shape == (1, 1, 256, 1024)
  assert v['stem1']['conv']['kernel'].shape == (3, 3, 3, 16)
  assert sorted(k for k in v if k.startswith('stage2')) == ['stage2_block1', 'stage2_block2']


def test_scaling_study_depths_registered():
  for depth in (26, 50, 101, 200, 300, 350, 400):
    sizes = MODELS[f'resnetrs{depth}']['stage_sizes']
    assert abs(3 * sum(sizes) + 2 - depth) <= 1, (depth, sizes)


def test_unknown_model_and_bad_switch_give_clear_errors():
  with pytest.raises(ValueError, match='registered'):
    create_model('resnetrs51')
  with pytest.raises(ValueError, match='stem'):
    create_model('resnetrs50', stem='wide')


def test_zero_init_last_bn_makes_blocks_identity_at_init():
  # With gamma_3 = 0 and beta = 0, a non-projection block returns relu(x) = x for x >= 0.
  block = layers.Bottleneck(16, model_conv_bn())
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 8, 8, 64)))
  v = jax.jit(block.init)(jax.random.key(1), x)
  y = jax.jit(lambda v, x: block.apply(v, x, mutable=['batch_stats'])[0])(v, x)
  np.testing.assert_allclose(y, x, atol=1e-6)


def model_conv_bn():
  import functools
  import flax.linen as nn
  conv = functools.partial(nn.Conv, use_bias=False, kernel_init=layers.conv_kernel_init)
  norm = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.0, epsilon=1e-5)
  return functools.partial(layers.ConvBN, conv=conv, norm=norm)


def test_official_initialisers():
  model = create_model('resnetrs50', num_classes=1000)
  v = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(
      jnp.zeros((1, 32, 32, 3)))['params']
  # TF1 variance_scaling_initializer(): std sqrt(1/fan_in) after truncation at 2 std.
  k = v['stage3_block1']['conv2']['conv']['kernel']
  fan_in = 3 * 3 * k.shape[2]
  assert abs(float(jnp.std(k)) * np.sqrt(fan_in) - 1.0) < 0.02
  assert float(jnp.max(jnp.abs(k))) <= 2 * np.sqrt(1 / fan_in) / 0.87962566 + 1e-6
  head = v['head']['kernel']
  assert abs(float(jnp.std(head)) - 0.01) < 0.0005
  assert float(jnp.abs(v['head']['bias']).max()) == 0.0
  assert float(jnp.abs(v['stage1_block1']['conv3']['bn']['scale']).max()) == 0.0
  assert float(jnp.min(v['stage1_block1']['conv1']['bn']['scale'])) == 1.0


def test_explicit_padding_gives_identical_outputs():
  kw = dict(width_multiplier=0.25, stage_sizes=(1, 1, 1, 1), num_classes=10)
  a, b = create_model('resnetrs50', **kw), create_model('resnetrs50', explicit_padding=True, **kw)
  x = jax.random.normal(jax.random.key(0), (2, 40, 40, 3))
  v = jax.jit(lambda x: a.init(jax.random.key(1), x, train=False))(x)
  apply = lambda m: jax.jit(lambda v, x: m.apply(v, x))(v, x)
  np.testing.assert_allclose(apply(a), apply(b), rtol=1e-5, atol=1e-6)


def test_stochastic_depth_is_per_stage_and_rescales():
  sd = layers.StochasticDepth(rate=0.3, deterministic=False)
  x = jnp.ones((20000, 1, 1, 1))
  y = jax.jit(lambda x: sd.apply({}, x, rngs={'dropout': jax.random.key(0)}))(x)
  kept = np.asarray(y[:, 0, 0, 0] > 0)
  assert abs(kept.mean() - 0.7) < 0.01
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
  # The network gives each stage rate x (i+2)/5, the same for all of its blocks.
  model = create_model('resnetrs50', stochastic_depth_rate=0.1, width_multiplier=0.125,
                       stage_sizes=(2, 2, 2, 2), num_classes=10)
  rates = {}
  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.StochasticDepth):
      rates[context.module.scope.path[0]] = context.module.rate
    return next_fun(*args, **kwargs)
  import flax.linen as nn
  x = jnp.ones((2, 32, 32, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  with nn.intercept_methods(record):  # tracing is enough to see each block's rate
    jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=['batch_stats'],
                                         rngs={'dropout': jax.random.key(0)}), v)
  expected = {f'stage{s}_block{b}': 0.1 * (s + 1) / 5 for s in range(1, 5) for b in (1, 2)}
  assert rates.keys() == expected.keys()
  for k in expected:
    assert rates[k] == pytest.approx(expected[k])


@pytest.mark.parametrize('shape', [(2, 6, 6, 3), (2, 5, 7, 3), (1, 1, 1, 2)])
def test_resnetd_avg_pool_matches_same_padding_without_pad_counting(shape):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), shape)
  expected = nn.avg_pool(x, (2, 2), (2, 2), padding='SAME', count_include_pad=False)
  np.testing.assert_allclose(layers.avg_pool_2x2(x), expected, rtol=1e-6)


@pytest.mark.parametrize('name, overrides', [
    ('resnetrs26', {}),  # deep stem, conv pool
    ('resnet50', {}),  # classic 7x7/2 stem, max pool
    ('resnetrs26', {'stem_pool': 'none'}),  # one stride-2 layer fewer
    ('resnetrs50', {'stage_sizes': (1, 2, 1, 3), 'stem': 'classic', 'stem_pool': 'conv'}),
    ('resnet26', {'stem_pool': 'none', 'stage_sizes': (2, 1, 1, 1)}),
])
def test_min_image_size_is_where_the_last_stride_2_layer_still_halves(name, overrides):
  """Independent check of rs.models.architecture.min_image_size, read off the network: the
  input of the last stride-2 layer (stage 4's first block) is at least 2x2 at the minimum
  and 1x1 one pixel below it."""
  from rs.models import architecture
  model = create_model(name, width_multiplier=0.125, num_classes=3, **overrides)
  smallest = architecture.min_image_size(model)
  assert smallest == architecture.total_stride(model) // 2 + 1

  def stage4_input(size):
    last = f'stage3_block{model.stage_sizes[2]}'
    _, state = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False,
        capture_intermediates=lambda module, _: module.name == last))
    (out,) = state['intermediates'][last]['__call__']
    return out.shape[1]

  assert stage4_input(smallest) == 2 and stage4_input(smallest - 1) == 1
  expected_stride = 2 ** (4 + (model.stem_pool != 'none'))
  assert architecture.total_stride(model) == expected_stride
