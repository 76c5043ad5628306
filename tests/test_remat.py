"""model.remat (issue 22): rematerialised stages give the same loss, gradients and BN statistics
as the plain network, keep the parameters' names, and the compiled train step needs less memory
in XLA's analysis."""
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


def test_the_compiled_train_step_with_remat_needs_less_memory_and_steps_the_same():
  """The trainer's own step (rs.programs) of the embedded default at batch 64: with per-block
  remat XLA's memory analysis is lower (on a CPU only because rs keeps jax.checkpoint's
  optimisation barriers: rs.programs.train_compiler_options), and one step leaves the same
  state as without remat."""
  from configs import fashion_mnist
  from rs import programs
  mesh = sharding.create_mesh(jax.devices()[:1])
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (64, 32, 32, 1), np.uint8),
           'label': rng.integers(0, 10, (64,), np.int32)}
  needs, states = {}, {}
  for remat in ('none', 'block'):
    config = fashion_mnist.get_config()
    config.batch_size, config.model.remat = 64, remat
    training = programs.build_training(config, mesh, 10, (32, 32, 1),
                                       optax.constant_schedule(0.1))
    state = jax.jit(training.init, out_shardings=training.state_sharding)(jax.random.key(0))
    step = training.train_fn.lower(state, batch).compile()
    needs[remat] = memory.step_bytes(step)
    states[remat], _ = step(state, sharding.to_global(batch, mesh))
  # Measured: 44.9 against 55.1 MB (0.81x); XLA:CPU's default pipeline gives 1.00x.
  assert needs['block'] < 0.9 * needs['none']
  for want, got in zip(jax.tree.leaves(states['none'].params),
                       jax.tree.leaves(states['block'].params)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if jax.default_backend() == 'cpu':
    model = models.create_model('resnetrs14', remat='block')
    assert programs.train_compiler_options(model) == {
        'xla_disable_hlo_passes': programs.CPU_BARRIER_EXPANDER}
    assert programs.train_compiler_options(model.clone(remat='none')) is None


def test_the_cpu_default_is_per_block_remat():
  """model.remat 'auto' (the default) is 'block' on a CPU, where it is faster and smaller
  (docs/performance.md): the default network's gradient program is the per-block one, not the
  plain one, and its train step keeps jax.checkpoint's barriers there."""
  from rs import programs
  from rs.models import layers
  images, labels = jnp.zeros((2, 32, 32, 1)), jnp.zeros((2,), jnp.int32)

  def gradient_program(**remat):
    model = models.create_model('resnetrs14', num_classes=10, width_multiplier=0.25, **remat)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    grad = jax.grad(_loss_fn(model, images, labels), has_aux=True)
    return str(jax.make_jaxpr(grad)(variables['params'], variables['batch_stats']))

  default = models.create_model('resnetrs14')
  assert default.remat == 'auto'
  if jax.default_backend() == 'cpu':
    assert layers.resolve_remat('auto') == 'block'
    assert gradient_program() == gradient_program(remat='block')
    assert gradient_program() != gradient_program(remat='none')
    assert programs.train_compiler_options(default) == {
        'xla_disable_hlo_passes': programs.CPU_BARRIER_EXPANDER}
  else:
    assert layers.resolve_remat('auto') == 'none'
    assert programs.train_compiler_options(default) is None
