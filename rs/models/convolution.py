"""How a convolution is lowered: XLA's own convolution, or forms that XLA:CPU runs faster.

The network's parameters and numbers do not depend on the choice (tests/test_convolution.py
compares every form with `lax.conv_general_dilated`, values and gradients); only the program
XLA compiles does. XLA:CPU computes the weight gradient of a 1x1 convolution as a convolution
over a transposed copy of the activations; as a matmul it runs faster ('pointwise', the CPU
default: RS-50@160 training 1.14x 'matmul', the embedded default 1.04x; docs/performance.md).
'matmul' also turns stride-2 convolutions into space-to-depth ones: 1.07x on the embedded
default on an earlier Intel VM, but on the current AMD VM its weight gradients cost RS-50 ~0.8
s per step (profile in docs/performance.md), so it is an option, not the default. On TPU and
GPU the native form is kept until issue 5's benchmark says otherwise.
"""
import functools

import jax.numpy as jnp
from jax import lax

from rs.models import by_backend

LOWERINGS = ('auto', 'native', 'matmul', 'pointwise')


def resolve(lowering: str) -> str:
  """'auto' is 'pointwise' on CPU and 'native' on accelerators."""
  return by_backend.resolve('model.conv_lowering', lowering, LOWERINGS, 'pointwise', 'native')


def _pads(padding, shape, kernel, strides):
  if isinstance(padding, str):
    return lax.padtype_to_pads(shape, kernel, strides, padding)
  return tuple(tuple(p) for p in padding)


def pointwise(x, kernel, strides):
  """A 1x1 (or 1x1x1) convolution as a matmul over channels (strides subsample first)."""
  x = x[(slice(None), *(slice(None, None, s) for s in strides), slice(None))]
  return jnp.einsum('...c,co->...o', x, kernel.reshape(kernel.shape[-2:]))


def space_to_depth_conv(x, kernel, pads):
  """A stride-2 k x k convolution as a stride-1 convolution on the 2x2 space-to-depth input.

  Output pixel (i, j) reads padded input rows 2i..2i+k-1. With the kernel zero-padded to an
  even size 2m, row 2i + 2p + r is row i + p of the space-to-depth image, sub-row r, so the
  result is a VALID m x m convolution whose kernel holds tap (2p + r, 2q + s) at (p, q) in the
  channel block (r, s).
  """
  n, h, w, c = x.shape
  kh, kw, _, features = kernel.shape
  mh, mw = (kh + 1) // 2, (kw + 1) // 2
  (top, bottom), (left, right) = pads
  ho, wo = (h + top + bottom - kh) // 2 + 1, (w + left + right - kw) // 2 + 1
  bh, bw = ho + mh - 1, wo + mw - 1  # space-to-depth blocks that the output reads
  # Pad (or crop: negative) to exactly 2*bh x 2*bw; extra rows meet zero kernel taps.
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (top, 2 * bh - h - top, 0), (left, 2 * bw - w - left, 0), (0, 0, 0)))
  x = x.reshape(n, bh, 2, bw, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, bh, bw, 4 * c)
  kernel = jnp.pad(kernel, ((0, 2 * mh - kh), (0, 2 * mw - kw), (0, 0), (0, 0)))
  kernel = kernel.reshape(mh, 2, mw, 2, c, features).transpose(0, 2, 1, 3, 4, 5)
  kernel = kernel.reshape(mh, mw, 4 * c, features)
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def matmul_friendly_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         space_to_depth=True):
  """Drop-in for `lax.conv_general_dilated` as flax's nn.Conv calls it (NHWC, HWIO; NTHWC,
  THWIO for clips).

  1x1 (1x1x1) kernels become matmuls, 2D stride-2 kernels space-to-depth convolutions; anything
  else (dilation, groups, stride 1, other 3D kernels) is passed through unchanged.
  """
  spatial = lhs.ndim - 2
  plain = (lhs.ndim in (4, 5) and feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1,) * spatial))
           and all(d == 1 for d in (rhs_dilation or (1,) * spatial)))
  if plain:
    strides = tuple(window_strides)
    pads = _pads(padding, lhs.shape[1:-1], rhs.shape[:spatial], strides)
    if rhs.shape[:spatial] == (1,) * spatial and all(p == (0, 0) for p in pads):
      return pointwise(lhs, rhs, strides)
    if spatial == 2 and strides == (2, 2) and space_to_depth:
      return space_to_depth_conv(lhs, rhs, pads)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


def conv_general_dilated(lowering: str):
  """The function nn.Conv should call for a resolved `lowering`."""
  resolved = resolve(lowering)
  if resolved == 'pointwise':  # 1x1 as matmuls, strided convs left to XLA
    return functools.partial(matmul_friendly_conv, space_to_depth=False)
  return matmul_friendly_conv if resolved == 'matmul' else lax.conv_general_dilated
