"""The CPU-friendly convolution forms against XLA's convolution: values and both gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rs.models import convolution, create_model

NHWC = ('NHWC', 'HWIO', 'NHWC')


def fixed(k):  # TF1 fixed padding, as the network uses
  return (((k - 1) // 2, k - 1 - (k - 1) // 2),) * 2


@pytest.mark.parametrize('size,kernel,strides,padding', [
    (8, 1, 1, fixed(1)), (7, 1, 2, 'VALID'), (9, 1, 2, 'SAME'),
    (2, 3, 2, fixed(3)), (7, 3, 2, fixed(3)), (16, 3, 2, fixed(3)), (15, 3, 2, 'SAME'),
    (8, 3, 2, 'VALID'), (32, 7, 2, fixed(7)), (12, 4, 2, 'VALID'), (8, 3, 1, fixed(3)),
])
def test_matches_xla_convolution_and_its_gradients(size, kernel, strides, padding):
  kx, kw = jax.random.split(jax.random.key(size * 10 + kernel))
  x = jax.random.normal(kx, (3, size, size + 1, 5))
  w = jax.random.normal(kw, (kernel, kernel, 5, 6))
  s = (strides, strides)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w, s, padding, dimension_numbers=NHWC)))
  want = lax.conv_general_dilated(x, w, s, padding, dimension_numbers=NHWC)
  got = convolution.matmul_friendly_conv(x, w, s, padding, dimension_numbers=NHWC)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, h in zip(jax.grad(loss(convolution.matmul_friendly_conv), (0, 1))(x, w),
                  jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)):
    # float32 sums of up to ~10^4 products: compare against the gradient's own scale
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-5 * float(jnp.abs(h).max()))


@pytest.mark.parametrize('kernel,strides', [((1, 1, 1), (1, 1, 1)), ((1, 1, 1), (1, 2, 2)),
                                            ((3, 1, 1), (1, 1, 1)), ((1, 3, 3), (1, 2, 2))])
def test_clip_convolutions_match_xla(kernel, strides):
  """Clips (N, T, H, W, C): 1x1x1 kernels become matmuls (strided: subsampled first), the
  rest pass through; values and both gradients equal XLA's 3D convolution."""
  ndhwc = ('NDHWC', 'DHWIO', 'NDHWC')
  kx, kw = jax.random.split(jax.random.key(sum(kernel) + sum(strides)))
  x = jax.random.normal(kx, (2, 4, 7, 6, 5))
  w = jax.random.normal(kw, (*kernel, 5, 6))
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, 'SAME',
                                                        dimension_numbers=ndhwc)))
  want = lax.conv_general_dilated(x, w, strides, 'SAME', dimension_numbers=ndhwc)
  got = convolution.matmul_friendly_conv(x, w, strides, 'SAME', dimension_numbers=ndhwc)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, h in zip(jax.grad(loss(convolution.matmul_friendly_conv), (0, 1))(x, w),
                  jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-5 * float(jnp.abs(h).max()))


def test_network_outputs_do_not_depend_on_the_lowering():
  kw = dict(width_multiplier=0.25, stage_sizes=(1, 1, 1, 1), num_classes=10)
  native = create_model('resnetrs50', conv_lowering='native', **kw)
  x = jax.random.normal(jax.random.key(0), (2, 33, 33, 3))
  v = jax.jit(lambda x: native.init(jax.random.key(1), x, train=False))(x)
  apply = lambda m: jax.jit(lambda v, x: m.apply(v, x))(v, x)
  for lowering in ('matmul', 'pointwise'):
    other = create_model('resnetrs50', conv_lowering=lowering, **kw)
    np.testing.assert_allclose(apply(other), apply(native), rtol=1e-5, atol=1e-5)


def test_auto_is_pointwise_on_cpu_and_bad_values_are_rejected():
  assert convolution.resolve('auto') == (
      'pointwise' if jax.default_backend() == 'cpu' else 'native')
  with pytest.raises(ValueError, match='conv_lowering'):
    create_model('resnetrs50', conv_lowering='fast')
