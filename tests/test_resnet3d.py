"""The 3D ResNet-RS for video (rs/models/resnet3d.py): parameter counts against an independent
count, the shapes the reference layout gives, and its switches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from rs.models import create_model, layers, registry, resnet3d


def params_of(name, clip=(1, 32, 224, 224, 3), **overrides):
  model = create_model(name, **overrides)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(clip)))
  return variables['params']


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def layout_count(stage_sizes, temporal_kernels, stem='deep', kt=5, se_ratio=0.25,
                 self_gating=True, classes=400) -> int:
  """Trainable parameters counted from the layer specification (the facts sheet's rule, 1.2-1.4),
  not from any module: conv kernels, BN gamma and beta, biases of SE, gating and head."""
  bn = lambda c: 2 * c
  total = (kt * 9 * 3 * 32 + bn(32) + 9 * 32 * 32 + bn(32) + 9 * 32 * 64 + bn(64)
           if stem == 'deep' else kt * 49 * 3 * 64 + bn(64))
  c_in = 64
  for i, blocks in enumerate(stage_sizes):
    f = 64 * 2**i
    for j in range(blocks):
      t = temporal_kernels[i][j % len(temporal_kernels[i])]
      total += t * c_in * f + bn(f) + 9 * f * f + bn(f) + f * 4 * f + bn(4 * f)
      if j == 0:
        total += c_in * 4 * f + bn(4 * f)  # projection shortcut
      if self_gating and j == blocks - 1:
        total += (4 * f)**2 + 4 * f
      if se_ratio:
        r = max(1, int(4 * f * se_ratio))
        total += 4 * f * r + r + r * 4 * f + 4 * f
      c_in = 4 * f
  return total + c_in * classes + classes


# The facts sheet's counts (section 1.5, computed there from the layer rules; 400 classes).
REFERENCE_MILLIONS = {'resnet3d_rs50': 48.1, 'resnet3d_rs101': 85.0, 'resnet3d_rs152': 114.8,
                      'resnet3d_rs200': 121.4, 'resnet3d50': 33.6}


@pytest.mark.parametrize('name', sorted(REFERENCE_MILLIONS))
def test_parameter_counts_equal_the_layer_rule_and_the_facts_sheet(name):
  fields = registry.MODELS[name]
  expected = layout_count(
      fields['stage_sizes'], fields.get('temporal_kernels', resnet3d.RS_TEMPORAL_KERNELS),
      stem=fields.get('stem', 'deep'), se_ratio=fields.get('se_ratio', 0.25))
  params = params_of(name)
  assert count(params) == expected
  assert round(count(params) / 1e6, 1) == REFERENCE_MILLIONS[name]


def test_self_gating_and_temporal_kernels_cost_what_the_facts_sheet_says():
  """Gating in every stage's last block: ~5.6M; RS's temporal kernel 3 in C4/C5: ~8.1M."""
  with_all = count(params_of('resnet3d_rs50'))
  no_gate = count(params_of('resnet3d_rs50', self_gating=False))
  flat = count(params_of('resnet3d_rs50', temporal_kernels=((1,),) * 4))
  assert with_all - no_gate == sum((4 * f)**2 + 4 * f for f in (64, 128, 256, 512))
  assert round((with_all - no_gate) / 1e6, 1) == 5.6
  assert round((with_all - flat) / 1e6, 1) == 8.1


def test_a_32_frame_clip_leaves_16_frames_of_7x7_at_the_last_stage():
  """The facts sheet's shapes for 32 x 224^2: T/2 after the stem, time kept by the blocks;
  spatial 112 -> 56 (pool) -> 56, 28, 14, 7. An eval view of 32 x 256^2 ends at 16 x 8^2."""
  for size, last in ((224, 7), (256, 8)):
    model = create_model('resnet3d_rs50')
    clip = jnp.zeros((1, 32, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), clip))
    _, state = jax.eval_shape(lambda v: model.apply(v, clip, capture_intermediates=True,
                                                    mutable=['intermediates']), variables)
    outputs = traverse_util.flatten_dict(state['intermediates'], sep='/')
    shapes = {k.split('/')[0]: v[0].shape for k, v in outputs.items()
              if k.endswith('__call__') and k.count('/') == 1}
    assert shapes['stem1'] == (1, 16, size // 2, size // 2, 32)
    assert shapes['stage1_block3'] == (1, 16, size // 4, size // 4, 256)
    assert shapes['stage4_block3'] == (1, 16, last, last, 2048)


def test_the_baseline_pools_time_and_uses_cvrl_kernels():
  """R3D-50 (Table 6's baseline): 7x7 stem and the 3x3x3 pool with temporal stride 2 -> T/4."""
  params = traverse_util.flatten_dict(params_of('resnet3d50'), sep='/')
  assert params['stem1/conv/kernel'].shape == (5, 7, 7, 3, 64)
  kernels = [params[f'stage3_block{j}/conv1/conv/kernel'].shape[0] for j in range(1, 7)]
  assert kernels == [3, 1, 3, 1, 3, 1]
  assert not any('/se/' in k for k in params) and 'stage4_block3/gating/gate/kernel' in params
  model = create_model('resnet3d50', width_multiplier=0.125)
  clip = jnp.zeros((1, 16, 64, 64, 3))
  variables = model.init(jax.random.key(0), clip)
  _, state = model.apply(variables, clip, capture_intermediates=True, mutable=['intermediates'])
  assert state['intermediates']['stage1_block1']['__call__'][0].shape[1] == 16 // 4


def test_clips_train_and_every_switch_turns_off():
  """A small 3D ResNet-RS trains one step in both modes; with self-gating, SE and stochastic
  depth off, and temporal kernels of 1, no parameter mentions them."""
  model = create_model('resnet3d_rs50', width_multiplier=0.125, stage_sizes=(1, 1, 1, 1),
                       num_classes=5, stochastic_depth_rate=0.5)
  clip = jax.random.uniform(jax.random.key(1), (2, 8, 32, 32, 3))
  variables = model.init(jax.random.key(0), clip)
  logits, updates = model.apply(variables, clip, train=True, mutable=['batch_stats'],
                                rngs={'dropout': jax.random.key(2)})
  assert logits.shape == (2, 5) and np.isfinite(logits).all()
  assert set(updates) == {'batch_stats'}
  plain = params_of('resnet3d_rs50', clip=(1, 8, 32, 32, 3), self_gating=False, se_ratio=0.0,
                    temporal_kernels=((1,),) * 4, stage_sizes=(1, 1, 1, 1))
  names = traverse_util.flatten_dict(plain, sep='/')
  assert not any('/gating/' in k or '/se/' in k for k in names)
  assert all(v.shape[0] == 1 for k, v in names.items()
             if k.endswith('conv1/conv/kernel') and k.startswith('stage'))


def test_resnetd_shortcut_pools_each_frame_like_the_2d_network():
  x = jax.random.normal(jax.random.key(0), (2, 3, 6, 5, 4))
  per_frame = jnp.stack([layers.avg_pool_2x2(x[:, t]) for t in range(3)], axis=1)
  np.testing.assert_allclose(layers.avg_pool_2x2(x), per_frame, rtol=1e-6)


def test_bad_layouts_are_one_line_errors():
  with pytest.raises(ValueError, match='temporal_kernels'):
    create_model('resnet3d_rs50', temporal_kernels=((1,), (1,), (3,)))
  with pytest.raises(ValueError, match='stem_temporal_stride=0'):
    create_model('resnet3d_rs50', stem_temporal_stride=0)
  model = create_model('resnet3d_rs50')
  with pytest.raises(ValueError, match='takes clips'):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _randomised_2d(se_ratio):
  """A small 2D ResNet-RS laid out like the 3D one below (max-pool stem), its BN statistics
  and gammas/betas random so that no branch is zero."""
  model = create_model('resnetrs50', width_multiplier=0.25, stage_sizes=(1, 1, 1, 1),
                       num_classes=7, stem_pool='max', se_ratio=se_ratio)
  image = jax.random.uniform(jax.random.key(3), (1, 40, 40, 3))
  variables = model.init(jax.random.key(0), image)
  keys = iter(jax.random.split(jax.random.key(9), 1000))

  def randomise(path, leaf):
    name = path[-1].key
    if name in ('mean', 'bias'):
      return 0.2 * jax.random.normal(next(keys), leaf.shape)
    if name in ('var', 'scale') and 'bn' in [getattr(p, 'key', None) for p in path]:
      return jax.random.uniform(next(keys), leaf.shape, minval=0.5, maxval=1.5)
    return leaf

  return model, jax.tree_util.tree_map_with_path(randomise, variables), image


@pytest.mark.parametrize('temporal', ['none', 'rs'])
def test_an_inflated_2d_checkpoint_computes_per_frame_what_it_did_on_the_image(temporal):
  """rs.transfer.merge inflates every 2D kernel (repeat over time, / its extent). On a clip
  repeating one image: with no temporal extent anywhere the logits equal the 2D network's on
  the image; with RS's temporal kernels (stem 5, C4/C5 3) the last block's output equals the 2D
  one at every frame the zero padding in time does not reach (without SE there: its mean over
  the whole clip carries the ends into every frame)."""
  from rs import transfer
  se_ratio = 0.25 if temporal == 'none' else 0.0
  model2d, variables2d, image = _randomised_2d(se_ratio)
  kernels = ((1,),) * 4 if temporal == 'none' else resnet3d.RS_TEMPORAL_KERNELS
  model3d = create_model('resnet3d_rs50', width_multiplier=0.25, stage_sizes=(1, 1, 1, 1),
                         num_classes=7, padding='fixed', self_gating=False, se_ratio=se_ratio,
                         resnetd_shortcut=True, temporal_kernels=kernels,
                         stem_temporal_kernel=1 if temporal == 'none' else 5)
  clip = jnp.repeat(image[:, None], 32, axis=1)
  initial = model3d.init(jax.random.key(1), clip)
  variables3d, report = transfer.merge(initial, variables2d)
  assert 'params/stem1/conv/kernel' in report['inflated'] and not report['unexpected']
  assert len(report['inflated']) == sum(1 for n in report['loaded'] if n.endswith('kernel')
                                        and n != 'params/head/kernel')
  if temporal == 'none':
    np.testing.assert_allclose(model3d.apply(variables3d, clip), model2d.apply(variables2d, image),
                               rtol=1e-4, atol=1e-5)
    return
  capture = lambda m, v, x: m.apply(v, x, capture_intermediates=True,
                                    mutable=['intermediates'])[1]['intermediates']
  last3d = capture(model3d, variables3d, clip)['stage4_block1']['__call__'][0]
  last2d = capture(model2d, variables2d, image)['stage4_block1']['__call__'][0]
  # 16 frames after the stem (frames 1-14 see no padded time); C4 and C5 each widen by one
  # frame either side: frames 3-12 are untouched by the padding.
  assert last3d.shape[1] == 16
  for t in range(3, 13):
    np.testing.assert_allclose(last3d[:, t], last2d, rtol=1e-4, atol=1e-5)
  assert not np.allclose(last3d[:, 0], last2d, rtol=1e-3, atol=1e-4)  # the ends do differ


def test_inflate_refuses_what_is_not_an_inflation():
  from rs import transfer
  kernel = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
  inflated = transfer.inflate(kernel, (3, 2, 2, 3, 4))
  np.testing.assert_allclose(inflated.sum(axis=0), kernel, rtol=1e-6)
  assert transfer.inflate(kernel, (3, 3, 2, 3, 4)) is None
  assert transfer.inflate(kernel, (2, 2, 3, 4)) is None


@pytest.mark.parametrize('name, size, gmacs', [
    ('resnet3d_rs50', 224, 88), ('resnet3d_rs50', 256, 115), ('resnet3d_rs101', 224, 175),
    ('resnet3d50', 224, 50)])
def test_summary_counts_a_clips_flops_as_the_facts_sheet(name, size, gmacs):
  """rs.tools.summary's XLA count per 32-frame clip against the facts sheet's (section 1.5,
  computed from the layer spec): 2 FLOPs per multiply-accumulate, within 1.5% (XLA also
  counts the element-wise work)."""
  from rs.tools import summary
  s = summary.summarize(name, size, num_classes=400, compiled=False)
  assert s['frames'] == 32
  assert s['gflops'] == pytest.approx(2 * gmacs, rel=0.015)


def test_summary_refuses_frames_for_an_image_network():
  from conftest import run_command
  result = run_command('rs.tools.summary', '--model=resnetrs50', '--frames=8')
  assert result.status == 1 and result.stderr.strip().splitlines()[-1] == (
      'error: --frames=8: resnetrs50 takes images; frames apply to 3D networks '
      '(resnet3d_rs50, ...)')


def test_benchmark_times_clips_and_refuses_what_does_not_apply():
  """rs.tools.benchmark on a 3D network trains on clips of --frames frames; frames for an
  image network, or timm for a 3D one, are one line each."""
  import json
  from conftest import run_command
  result = run_command('rs.tools.benchmark', '--model=resnet3d_rs50', '--width_multiplier=0.125',
                       '--image_size=32', '--frames=4', '--batch_size=2', '--steps=1',
                       '--rounds=1', '--kinds=inference', '--devices=1', '--json')
  assert result.status == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
  assert rows[0]['frames'] == 4 and rows[-1]['measurement'] == 'rs/inference'
  for args, why in ((('--model=resnetrs50', '--frames=8'), '--frames=8: resnetrs50 takes images'),
                    (('--model=resnet3d_rs50', '--compare=timm'), 'timm has no 3D networks')):
    result = run_command('rs.tools.benchmark', *args)
    assert result.status == 1 and why in result.stderr.strip().splitlines()[-1]
