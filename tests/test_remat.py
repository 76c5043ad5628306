"""model.remat (issue 22): rematerialised stages give the same loss, gradients and BN statistics
as the plain network, keep the parameters' names, and need less memory in XLA's analysis."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rs import memory, models, sharding, validate
from rs.models import registry


SETTINGS = [('block', 'convolutions'), ('block', 'nothing'), ('stage', 'convolutions'),
            ('stage', 'nothing')]


def _loss_fn(model, images, labels):
  def loss(params, batch_stats):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True, mutable=['batch_stats'],
                                  rngs={'dropout': jax.random.key(3)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
  return loss


def _grads(name, remat, policy, images, labels, **fields):
  model = models.create_model(name, num_classes=10, remat=remat, remat_policy=policy, **fields)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), images)
  grad = jax.jit(jax.value_and_grad(_loss_fn(model, images, labels), has_aux=True))
  return grad(variables['params'], variables['batch_stats'])


SHAPES = {'resnetrs14': (4, 32, 32, 3), 'resnet3d_rs50': (2, 4, 32, 32, 3)}


@functools.lru_cache(maxsize=None)
def _case(name, remat, policy):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=SHAPES[name]), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, len(images)))
  fields = dict(width_multiplier=0.25, stochastic_depth_rate=0.2, dropout_rate=0.25)
  if name == 'resnet3d_rs50':
    fields['stage_sizes'] = (1, 1, 1, 1)
  return _grads(name, remat, policy, images, labels, **fields)


@pytest.mark.parametrize('name, remat, policy', [('resnetrs14', *s) for s in SETTINGS]
                         + [('resnet3d_rs50', 'stage', 'nothing')])
def test_remat_gives_the_same_loss_gradients_and_statistics(name, remat, policy):
  """Stochastic depth and dropout on: the recomputation draws the same masks."""
  (loss, stats), grads = _case(name, 'none', 'convolutions')
  (loss_r, stats_r), grads_r = _case(name, remat, policy)
  assert jax.tree.structure(grads_r) == jax.tree.structure(grads)  # the same names
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  for want, got in zip(jax.tree.leaves((grads, stats)), jax.tree.leaves((grads_r, stats_r))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_remat_keeps_less_for_the_backward_pass():
  """What the backward pass keeps (rs.memory.saved_activation_bytes), RS-26 at 64 px: each
  remat setting keeps less than none; keeping only each stage's input least of all. (RS-50 at
  160 px, batch 8: 1,076 MiB; block 393 or 232; stage 331 or 170, convolutions or nothing.)"""
  kept = {(remat, policy): memory.saved_activation_bytes(models.create_model(
              'resnetrs26', remat=remat, remat_policy=policy), (4, 64, 64, 3))
          for remat, policy in [('none', 'convolutions'), *SETTINGS]}
  none = kept['none', 'convolutions']
  # Independent lower bound without remat: the stem's first output alone, 4 x 32 x 32 x 32 floats.
  assert none > 4 * 32 * 32 * 32 * 4
  assert kept['stage', 'convolutions'] < kept['block', 'convolutions'] < 0.5 * none
  assert kept['stage', 'nothing'] < kept['block', 'nothing'] < kept['block', 'convolutions']
  assert kept['stage', 'nothing'] < 0.25 * none  # the stages' inputs and the stem's residuals


@pytest.mark.parametrize('field, value', [('remat', 'layer'), ('remat_policy', 'dots')])
def test_bad_remat_values_are_one_line(tiny, field, value):
  config = tiny()
  config.model[field] = value
  with pytest.raises(validate.ConfigError, match=f'model.{field}={value!r}: set '):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  with pytest.raises(ValueError, match=f'model.{field}'):
    models.create_model('resnetrs14', **{field: value})


def test_efficientnet_has_no_remat():
  with pytest.raises(registry.UnknownModelError, match='model.remat does not apply'):
    models.create_model('efficientnet_b0', remat='block')
