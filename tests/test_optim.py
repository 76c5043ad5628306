"""Optimizer, schedule, weight decay and EMA against hand-computed values."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from rs import optim, step
from rs.models import create_model


def opt_config(**kw):
  c = ml_collections.ConfigDict(dict(base_learning_rate=0.1, schedule='cosine', momentum=0.9,
                                     nesterov=True, weight_decay=4e-5))
  c.update(kw)
  return c


def test_peak_lr_follows_linear_scaling():
  assert optim.peak_learning_rate(0.1, 4096) == pytest.approx(1.6)


def test_warmup_then_cosine():
  s = optim.learning_rate_schedule(opt_config(), 4096, warmup_steps=100, total_steps=1100,
                                   steps_per_epoch=10)
  assert float(s(0)) == 0.0
  assert float(s(50)) == pytest.approx(0.8)
  assert float(s(100)) == pytest.approx(1.6)
  # Halfway through the decay, cosine is at half the peak; at the end, 0.
  assert float(s(600)) == pytest.approx(0.8, rel=1e-5)
  assert float(s(350)) == pytest.approx(1.6 * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-5)
  assert float(s(1100)) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_divides_by_ten_three_times():
  s = optim.learning_rate_schedule(opt_config(schedule='step'), 256, warmup_steps=10,
                                   total_steps=900, steps_per_epoch=10)
  assert [float(s(t)) for t in (10, 299, 301, 599, 601, 799, 801)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001])


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match='schedule'):
    optim.learning_rate_schedule(opt_config(schedule='linear'), 256, 1, 10, 1)


def test_weight_decay_mask_excludes_exactly_batch_norm():
  model = create_model('resnetrs50')
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))['params']
  mask = optim.weight_decay_mask(params)
  excluded = sum(p.size for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if not m)
  # BN gamma + beta: 2 x (stem 32+32+64+64) + 2 x per block (f + f + 4f) + projections (4f).
  bn = 2 * (32 + 32 + 64 + 64)
  for i, n in enumerate((3, 4, 6, 3)):
    f = 64 * 2**i
    bn += n * 2 * 6 * f + 2 * 4 * f
  assert excluded == bn
  # SE and classifier biases are decayed, as in TF1.
  assert mask['head']['bias'] and mask['stage1_block1']['se']['reduce']['bias']


def test_sgd_step_matches_tf1_nesterov_momentum_with_l2():
  params = {'w': jnp.array([1.0, -2.0]), 'bn': {'scale': jnp.array([3.0])}}
  grads = {'w': jnp.array([0.5, 0.25]), 'bn': {'scale': jnp.array([1.0])}}
  lr, m, wd = 0.1, 0.9, 0.01
  tx = optim.create_optimizer(opt_config(weight_decay=wd), lambda _: lr)
  state = tx.init(params)
  p = params
  accum = {'w': np.zeros(2), 'bn': np.zeros(1)}
  ref = {'w': np.array([1.0, -2.0]), 'bn': np.array([3.0])}
  for _ in range(3):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
    # TF1 MomentumOptimizer(use_nesterov=True) on loss + wd * l2_loss (BN excluded).
    for k, g in (('w', np.array([0.5, 0.25])), ('bn', np.array([1.0]))):
      g = g + (wd * ref[k] if k == 'w' else 0)
      accum[k] = m * accum[k] + g
      ref[k] = ref[k] - lr * (g + m * accum[k])
  np.testing.assert_allclose(p['w'], ref['w'], rtol=1e-6)
  np.testing.assert_allclose(p['bn']['scale'], ref['bn'], rtol=1e-6)


def test_rmsprop_step_matches_tf1_rmsprop_with_l2_by_hand():
  """TF1 RMSPropOptimizer(decay 0.9, momentum 0.9, epsilon 1e-3) on loss + wd * l2_loss:
  ms starts at 1, epsilon inside the root, the learning rate inside the momentum buffer; the
  gradients change every step and the learning rate too, so a misplaced lr shows."""
  params = {'w': jnp.array([1.0, -2.0]), 'bn': {'scale': jnp.array([3.0])}}
  lrs, decay, mom, eps, wd = (0.1, 0.05, 0.2, 0.15), 0.9, 0.9, 1e-3, 1e-2
  tx = optim.create_optimizer(opt_config(name='rmsprop_tf', momentum=mom, nesterov=False,
                                         weight_decay=wd, rmsprop_decay=decay,
                                         rmsprop_epsilon=eps), lambda t: jnp.take(
                                             jnp.array(lrs), t))
  state = tx.init(params)
  p = params
  ref = {'w': np.array([1.0, -2.0]), 'bn': np.array([3.0])}
  ms = {k: np.ones_like(v) for k, v in ref.items()}
  buf = {k: np.zeros_like(v) for k, v in ref.items()}
  rng = np.random.default_rng(0)
  for t in range(4):
    raw = {'w': rng.normal(size=2), 'bn': rng.normal(size=1)}
    updates, state = tx.update({'w': jnp.asarray(raw['w'], jnp.float32),
                                'bn': {'scale': jnp.asarray(raw['bn'], jnp.float32)}}, state, p)
    p = optax.apply_updates(p, updates)
    for k in ref:
      g = raw[k] + (wd * ref[k] if k == 'w' else 0)  # BN is not decayed
      ms[k] = decay * ms[k] + (1 - decay) * g**2
      buf[k] = mom * buf[k] + lrs[t] * g / np.sqrt(ms[k] + eps)
      ref[k] = ref[k] - buf[k]
  np.testing.assert_allclose(p['w'], ref['w'], rtol=1e-5)
  np.testing.assert_allclose(p['bn']['scale'], ref['bn'], rtol=1e-5)


def test_exponential_schedule_is_efficientnets_staircase_from_step_zero():
  """Peak 0.016 x 2048/256 = 0.128, 5 warmup epochs of 100 steps, x0.97 every int(2.4 x 100)
  = 240 steps counted from step 0: the warmup ends on 0.128 x 0.97^2."""
  s = optim.learning_rate_schedule(opt_config(schedule='exponential', base_learning_rate=0.016,
                                              decay_rate=0.97, decay_epochs=2.4), 2048,
                                   warmup_steps=500, total_steps=5000, steps_per_epoch=100)
  assert float(s(250)) == pytest.approx(0.064)  # linear warmup towards the peak
  assert [float(s(t)) for t in (500, 719, 720, 959, 960, 4999)] == pytest.approx(
      [0.128 * 0.97**k for k in (2, 2, 3, 3, 4, 20)], rel=1e-6)


def test_l2_loss_is_half_sum_of_squares_of_decayed_params():
  params = {'w': jnp.array([1.0, 2.0]), 'bn': {'bias': jnp.array([5.0])}}
  assert float(optim.l2_loss(params)) == pytest.approx(2.5)


def test_ema_decay_rule():
  assert float(step.ema_decay(0.9999, jnp.array(0))) == pytest.approx(0.1)
  assert float(step.ema_decay(0.9999, jnp.array(90))) == pytest.approx(91 / 100)
  assert float(step.ema_decay(0.9999, jnp.array(10**7))) == pytest.approx(0.9999)


def test_durations_in_steps_or_epochs():
  c = ml_collections.ConfigDict({'train_epochs': 350.0, 'train_steps': None})
  assert optim.steps_for(c, 'train', 1_281_167 / 4096) == 109_475  # the official step count
  c.train_steps = 7
  assert optim.steps_for(c, 'train', 100.0) == 7
