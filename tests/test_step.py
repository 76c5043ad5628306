"""The jitted train/eval steps: loss values, dtypes, and exact masked evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs import optim, programs, sharding, step, transfer


def test_label_smoothed_cross_entropy_matches_formula():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  p = np.exp([2.0, 0.0, -1.0]); p /= p.sum()
  targets = 0.9 * np.array([1, 0, 0]) + 0.1 / 3
  expected = -(targets * np.log(p)).sum()
  assert float(step.cross_entropy(logits, jnp.array([0]), 3, 0.1)[0]) == pytest.approx(expected, rel=1e-6)


def test_topk():
  logits = jnp.array([[0.1, 0.5, 0.3, 0.2, 0.0, -1.0]])
  assert float(step.topk_correct(logits, jnp.array([2]), 1)[0]) == 0.0
  assert float(step.topk_correct(logits, jnp.array([2]), 5)[0]) == 1.0
  assert float(step.topk_correct(logits, jnp.array([5]), 5)[0]) == 0.0


def make(config, mesh, num_classes=10):
  """The trainer's own programs (rs.programs.build_training) for 16x16 grayscale images."""
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, 2, 10, 10.0)
  training = programs.build_training(config, mesh, num_classes, (16, 16, 1), schedule)
  state = jax.jit(training.init, out_shardings=training.state_sharding)(jax.random.key(0))
  return training.model, state, training.train_fn


@pytest.fixture(scope='module')
def eight_devices():
  """The tiny config's programs on the 8 devices, compiled once for the tests below; each
  test starts from its own fresh state (`init()`)."""
  from conftest import tiny_config
  mesh = sharding.create_mesh()
  schedule = optim.learning_rate_schedule(tiny_config().optimizer, 32, 2, 10, 10.0)
  training = programs.build_training(tiny_config(), mesh, 10, (16, 16, 1), schedule)
  init = jax.jit(training.init, out_shardings=training.state_sharding)
  return mesh, training, lambda: init(jax.random.key(0))


def fake_batch(n, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, 16, 16, 1), dtype=np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def test_bfloat16_compute_keeps_float32_state_and_loss(tiny):
  config = tiny(dtype='bfloat16')
  mesh = sharding.create_mesh()
  _, state, train = make(config, mesh)
  state, metrics = train(state, sharding.to_global(fake_batch(32), mesh))
  for leaf in jax.tree.leaves((state.params, state.batch_stats, state.ema_params)):
    assert leaf.dtype == jnp.float32
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(float(metrics['loss']))


def test_state_is_donated_and_replicated(eight_devices):
  mesh, training, init = eight_devices
  state = init()
  old = state.params['head']['kernel']
  state, _ = training.train_fn(state, sharding.to_global(fake_batch(32), mesh))
  assert old.is_deleted()  # its buffer was reused for the new state
  assert state.params['head']['kernel'].sharding.is_fully_replicated


def test_batch_must_divide_over_devices():
  mesh = sharding.create_mesh()
  with pytest.raises(ValueError, match='multiple of 8'):
    sharding.check_batch_size('batch_size', 30, mesh)


def test_ema_tracks_params_with_official_decay(eight_devices):
  mesh, training, init = eight_devices
  state = init()
  p0 = np.asarray(state.params['head']['kernel'])
  state, _ = training.train_fn(state, sharding.to_global(fake_batch(32), mesh))
  p1 = np.asarray(state.params['head']['kernel'])
  # First update: decay min(0.999, 1/10) = 0.1 (the tiny config's EMA decay is 0.999).
  np.testing.assert_allclose(state.ema_params['head']['kernel'], 0.1 * p0 + 0.9 * p1, rtol=1e-5,
                             atol=1e-7)


def test_eval_step_counts_only_unmasked_examples(eight_devices, tiny):
  config = tiny()
  mesh, training, init = eight_devices
  state = init()
  batch = fake_batch(16)
  batch['mask'] = np.array([1] * 11 + [0] * 5, np.float32)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  sums = training.eval_fn(variables, sharding.to_global(batch, mesh))
  logits = training.model.apply(variables, step.normalize(batch['image'], config.data.mean,
                                                          config.data.std))
  correct = np.argmax(np.asarray(logits), -1) == batch['label']
  assert float(sums['count']) == 11
  assert float(sums['top1']) == correct[:11].sum()


def compiled_flops(config, mesh, image_size=64):
  """XLA's FLOP count of the trainer's compiled train step and of its eval forward."""
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, 2, 10, 10.0)
  shape = (image_size, image_size, 1)
  training = programs.build_training(config, mesh, 10, shape, schedule)
  state = jax.eval_shape(training.init, jax.random.key(0))
  batch = {'image': jax.ShapeDtypeStruct((config.batch_size, *shape), jnp.uint8),
           'label': jax.ShapeDtypeStruct((config.batch_size,), jnp.int32),
           'mask': jax.ShapeDtypeStruct((config.batch_size,), jnp.float32)}
  train = training.train_fn.lower(state, {k: batch[k] for k in ('image', 'label')}).compile()
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  evaluation = training.eval_fn.lower(variables, batch).compile()
  return (train.cost_analysis()['flops'], evaluation.cost_analysis()['flops'])


def test_a_frozen_backbone_costs_no_backward_pass(tiny):
  """Backward is ~2x the forward: full training ~3 forwards of FLOPs; a linear probe (every
  parameter but the head's frozen) differentiates only the head, so its step is ~1 forward."""
  mesh = sharding.create_mesh(jax.devices()[:1])
  config = tiny()
  full, forward = compiled_flops(config, mesh)
  config.optimizer.param_groups = ('^head/:1', '.*:0')
  probe, _ = compiled_flops(config, mesh)
  assert full > 2.5 * forward
  assert forward < probe < 1.3 * forward


def test_linear_probe_keeps_the_backbone_and_its_batch_norm_statistics(tiny):
  """Two steps of a linear probe (the first has learning rate 0: warmup) change only the head;
  its BN statistics stay as they were (freeze_bn_statistics), or are replaced by the batch's
  with the option off."""
  mesh = sharding.create_mesh(jax.devices()[:1])
  batch = sharding.to_global(fake_batch(32), mesh)
  for freeze in (True, False):
    config = tiny(ema_decay=0.0)
    config.optimizer.param_groups = ('^head/:1', '.*:0')
    config.optimizer.freeze_bn_statistics = freeze
    _, state, train = make(config, mesh)
    before = jax.device_get(state)
    for _ in range(2):
      state, metrics = train(state, batch)
    after = jax.device_get(state)
    for name, value in transfer.named_leaves(after.params).items():
      changed = not np.array_equal(value, transfer.named_leaves(before.params)[name])
      assert changed == name.startswith('head/'), name
    stats_changed = [not np.array_equal(a, b) for a, b in
                     zip(jax.tree.leaves(after.batch_stats), jax.tree.leaves(before.batch_stats))]
    assert (not any(stats_changed)) if freeze else all(stats_changed)
    assert float(metrics['grad_norm']) > 0


def test_bfloat16_training_agrees_with_float32_on_real_images(tiny):
  """Same initial weights, same real Fashion-MNIST batches: bfloat16 compute (8 significant
  bits, ~0.4% per rounding) follows the float32 run: losses within 2%, and after 3 updates the
  parameters differ by under 2% of their norm."""
  from rs.data import pipeline as pipeline_lib
  mesh = sharding.create_mesh(jax.devices()[:1])
  batches = [pipeline_lib.create_pipeline(tiny()).train_batch(s) for s in range(3)]
  runs = {}
  for dtype in ('float32', 'bfloat16'):
    _, state, train = make(tiny(dtype=dtype), mesh)
    losses = []
    for batch in batches:
      state, metrics = train(state, sharding.to_global(batch, mesh))
      losses.append(float(metrics['loss']))
    runs[dtype] = losses, jax.device_get(state.params)
  (l32, p32), (l16, p16) = runs['float32'], runs['bfloat16']
  np.testing.assert_allclose(l16, l32, rtol=2e-2)
  diff = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p16),
                                                          jax.tree.leaves(p32))))
  norm = np.sqrt(sum(np.sum(a ** 2) for a in jax.tree.leaves(p32)))
  assert diff / norm < 2e-2


def test_evaluation_runs_one_forward_per_weight_set_and_batch(tiny):
  """The EMA weights are scored only where the run keeps an EMA (ema_decay > 0); each set's
  figures are those of evaluating it alone."""
  from rs import train
  from rs.data import pipeline as pipeline_lib
  mesh = sharding.create_mesh(jax.devices()[:1])
  config = tiny()
  pipeline = pipeline_lib.create_pipeline(config)
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, 2, 10, 10.0)
  training = programs.build_training(config, mesh, 10, pipeline.image_shape, schedule)
  state = jax.jit(training.init, out_shardings=training.state_sharding)(jax.random.key(0))
  for _ in range(3):  # the EMA now differs from the raw weights
    state, _ = training.train_fn(state, sharding.to_global(pipeline.train_batch(0), mesh))
  calls = []

  def counted(variables, batch):
    calls.append(1)
    return training.eval_fn(variables, batch)

  both = train.evaluate(counted, train.weight_sets(state, config), pipeline, mesh)
  assert len(calls) == 2 * pipeline.num_eval_batches
  ema_alone = train.evaluate(training.eval_fn, {'': {'params': state.ema_params,
                                                     'batch_stats': state.ema_batch_stats}},
                             pipeline, mesh)
  assert both['ema_top1'] == ema_alone['top1'] and both['ema_loss'] == ema_alone['loss']
  assert both['loss'] != both['ema_loss']
  calls.clear()
  raw_only = train.evaluate(counted, train.weight_sets(state, tiny(ema_decay=0.0)), pipeline,
                            mesh)
  assert len(calls) == pipeline.num_eval_batches and 'ema_top1' not in raw_only
  assert raw_only == {k: v for k, v in both.items() if not k.startswith('ema_')}
