"""GroupBatchNorm: flax BatchNorm's variables, per-group training statistics (TPU per-core BN)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs.models import layers


def by_hand(x, group_size, scale, bias, eps=1e-5):
  """Each group of `group_size` examples normalised with its own mean and biased variance."""
  out = np.empty_like(x)
  for start in range(0, len(x), group_size):
    g = x[start:start + group_size].astype(np.float64)
    mean = g.mean(axis=(0, 1, 2))
    var = ((g - mean) ** 2).mean(axis=(0, 1, 2))
    out[start:start + group_size] = (g - mean) / np.sqrt(var + eps) * scale + bias
  return out


@pytest.mark.parametrize('group_size', [2, 4, 8])
def test_training_statistics_are_per_group(group_size):
  x = np.asarray(jax.random.normal(jax.random.key(0), (8, 3, 3, 5)) * 3 + 1)
  bn = layers.GroupBatchNorm(group_size=group_size, momentum=0.0)
  v = bn.init(jax.random.key(1), x)
  v = {'params': {'scale': jnp.arange(1., 6.), 'bias': jnp.full(5, 0.5)},
       'batch_stats': v['batch_stats']}
  y, updates = bn.apply(v, x, mutable=['batch_stats'])
  np.testing.assert_allclose(y, by_hand(x, group_size, np.arange(1., 6.), 0.5), atol=1e-5)
  groups = x.reshape(8 // group_size, group_size, 3, 3, 5)
  np.testing.assert_allclose(updates['batch_stats']['mean'], groups.mean(axis=(1, 2, 3)).mean(0),
                             atol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['var'], groups.var(axis=(1, 2, 3)).mean(0),
                             atol=1e-5)


def test_whole_batch_equals_flax_batchnorm_train_and_eval():
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3))
  ours, theirs = layers.GroupBatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9,
                                                                   use_fast_variance=False)
  v = theirs.init(jax.random.key(1), x, use_running_average=False)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, v)
  y1, s1 = ours.apply(v, x, mutable=['batch_stats'])
  y2, s2 = theirs.apply(v, x, use_running_average=False, mutable=['batch_stats'])
  np.testing.assert_allclose(y1, y2, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s1, s2)
  eval_bn = layers.GroupBatchNorm(use_running_average=True)
  np.testing.assert_allclose(eval_bn.apply(s1 | {'params': v['params']}, x),
                             theirs.apply(s1 | {'params': v['params']}, x,
                                          use_running_average=True), atol=1e-5)


def test_group_size_must_divide_the_batch():
  with pytest.raises(ValueError, match='bn_group_size=3 must divide the batch of 8'):
    layers.GroupBatchNorm(group_size=3).init(jax.random.key(0), jnp.zeros((8, 2, 2, 1)))
