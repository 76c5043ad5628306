"""rs.data.randaugment's fast op formulations give the very bits of the plain ones.

rs.data.randaugment_plain holds the direct transcription of each op that rs.data.randaugment
reformulates for speed (the plain ones are checked against PIL in test_randaugment.py). Here
every reformulated op is compared with its plain form, bit for bit (Sharpness: with exact
integer arithmetic, see its test), on real photographs and on
edge cases (constant channels, tiny images, squares at the border, fractional and oversized
shifts), eagerly, in a traced graph with static shapes, and with unknown shapes, since the
fast forms take different paths for each.
"""
import math

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from rs.data import randaugment as ra
from rs.data import randaugment_plain as plain


def _photo(loader, size):
  return np.asarray(Image.fromarray(loader()).resize(size, Image.BILINEAR))


IMAGES = {
    'chelsea': _photo(skimage.data.chelsea, (97, 64)),  # (H, W) = (64, 97): not square
    # A constant red channel, a two-valued green one, noise in blue.
    'flat': np.stack([np.full((20, 30), 200, np.uint8),
                      np.where(np.arange(600).reshape(20, 30) % 7 == 0, 255, 3).astype(np.uint8),
                      np.random.RandomState(0).randint(0, 256, (20, 30)).astype(np.uint8)], 2),
    'tiny': np.random.RandomState(1).randint(0, 256, (3, 4, 3)).astype(np.uint8),
    'strip': np.random.RandomState(2).randint(0, 256, (2, 9, 3)).astype(np.uint8),
}
images = pytest.mark.parametrize('image', list(IMAGES))

# Each reformulated op with the argument lists that exercise its paths: the policy's values at
# M = 5, 10, 15, 20 and 7.3, plus values only a direct call can give.
CASES = {
    'autocontrast': [()],
    'equalize': [()],
    'posterize': [(b,) for b in range(0, 10)],
    'solarize': [(t,) for t in (0, 128, 256, 384, 100, 255, 1)],
    'solarize_add': [(a,) for a in (0, 30, 55, 110, 255, 300, -40, -300)],
    'contrast': [(f,) for f in (0.0, 0.5, 1.0, 1.5, 1.9, 1.2044)],
    'brightness': [(f,) for f in (0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 1.2044)],
    'translate_x': [(p,) for p in (0, 7, -7, 3.0, -3.0, 2.5, -1.25, 150.0, -150, 1000)],
    'translate_y': [(p,) for p in (0, 7, -7, 3.0, -3.0, 2.5, -1.25, 150.0, -150, 1000)],
    'rotate': [(d,) for d in (0.0, 30.0, -13.7, 90.0)],
}
CUTOUTS = [(4, 10, 10), (4, 0, 0), (6, 63, 96), (0, 5, 5), (3, -10, 5), (2, 100, 200),
           (30, 10, 10)]

_CALLS = [(name, args) for name, arg_list in CASES.items() for args in arg_list]


def _run(fn, image, args, mode):
  """fn(image, *args) eagerly, in a tf.function of the static shape, or of shape unknown."""
  if mode == 'eager':
    return fn(tf.constant(image), *args).numpy()
  shape = image.shape if mode == 'static' else [None, None, 3]
  traced = tf.function(lambda x: fn(x, *args),
                       input_signature=[tf.TensorSpec(shape, tf.uint8)])
  return traced(tf.constant(image)).numpy()


@images
@pytest.mark.parametrize('mode', ['eager', 'static', 'unknown'])
def test_fast_ops_equal_plain_ops_bit_for_bit(image, mode):
  image = IMAGES[image]
  for name, args in _CALLS:
    fast = _run(getattr(ra, name), image, args, mode)
    reference = _run(getattr(plain, name), image, args, mode)
    assert fast.dtype == np.uint8 and fast.shape == image.shape, (name, args)
    np.testing.assert_array_equal(fast, reference, err_msg=f'{name}{args} {mode}')


# Direct-call factors, then the policy's at M = 15 and 20 (M = 5 and 10 give 1.0 and 1.9):
# the blend moves the convolution's rounding by |1 - factor|, which is more than one level
# from factor 2 up.
SHARPNESS_FACTORS = (0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 1.2044, 2.0,
                     ra.level_to_arg('Sharpness', 15), ra.level_to_arg('Sharpness', 20))


def _sharpness_bound(factor):
  """Most levels by which the fast Sharpness and the official convolution can differ.

  The two smoothed images differ by at most one level, the convolution's lower (see
  `_sharpness_numpy`); the blend d + f (x - d) = (1 - f) d + f x turns that into |1 - f|,
  and truncation (and clipping, which commutes with it) into at most ceil(|1 - f|) levels.
  """
  return math.ceil(abs(1.0 - factor))


def _sharpness_numpy(image, factor, rounded_down=False):
  """The official Sharpness in exact integer arithmetic: interior smoothed to
  floor((8 neighbours + 5 centre) / 13), then blended in float32 as the official blend.

  rounded_down: the float32 convolution's worst case instead. Its error is far below 1/13,
  so it can only come out one level low, where 13 divides the sum (the exact quotient is an
  integer, which it may undershoot); elsewhere the quotient is at least 1/13 from one.
  """
  x = image.astype(np.int64)
  h, w = x.shape[:2]
  if min(h, w) < 3:
    return image
  total = sum(x[r:h - 2 + r, c:w - 2 + c] for r in range(3) for c in range(3)) + 4 * x[1:-1, 1:-1]
  degenerate = image.copy()
  degenerate[1:-1, 1:-1] = total // 13 - (rounded_down & (total % 13 == 0) & (total > 0))
  d, x = degenerate.astype(np.float32), image.astype(np.float32)
  blended = d + np.float32(factor) * (x - d)
  if not 0.0 < factor < 1.0:
    blended = np.clip(blended, 0.0, 255.0)
  return blended.astype(np.uint8)


@images
@pytest.mark.parametrize('mode', ['eager', 'static', 'unknown'])
def test_fast_sharpness_is_exact_and_within_the_blend_bound_of_the_convolution(image, mode):
  """Bit for bit the exact integer smoothing; the official float32 convolution rounds some
  flat pixels one level down, differently on different CPUs (oneDNN vs Eigen kernels), and
  the blend scales that: the outputs differ by at most ceil(|1 - factor|) levels (1 up to
  factor 2, 2 at M = 15, 3 at M = 20) on at most 2% of the values."""
  image = IMAGES[image]
  for factor in SHARPNESS_FACTORS:
    fast = _run(ra.sharpness, image, (factor,), mode)
    np.testing.assert_array_equal(fast, _sharpness_numpy(image, factor), err_msg=str(factor))
    if min(image.shape[:2]) < 3:
      continue  # no interior: the plain form's padding of an empty convolution fails
    diff = np.abs(fast.astype(int) - _run(plain.sharpness, image, (factor,), mode))
    assert diff.max() <= _sharpness_bound(factor), (factor, diff.max())
    assert np.mean(diff > 0) <= 0.02, factor


def test_sharpness_blend_bound_is_reached():
  """ceil(|1 - factor|) is no loose bound: on the photograph, the convolution's worst case
  (one level low wherever 13 divides the sum) moves the output by exactly that much, so a
  one-level bound would not hold at M = 15 or 20. (Whether a given CPU's convolution rounds
  down there varies; the test above bounds what it does, and this one checks that it rounds
  down nowhere else.)"""
  image = IMAGES['chelsea']
  smoothed = plain.sharpness(tf.constant(image), 0.0).numpy()  # factor 0: the smoothed image
  assert np.all((smoothed == _sharpness_numpy(image, 0.0)) |
                (smoothed == _sharpness_numpy(image, 0.0, rounded_down=True)))
  for factor in SHARPNESS_FACTORS:
    diff = np.abs(_sharpness_numpy(image, factor).astype(int) -
                  _sharpness_numpy(image, factor, rounded_down=True))
    assert diff.max() == _sharpness_bound(factor), (factor, diff.max())


@images
@pytest.mark.parametrize('mode', ['eager', 'static', 'unknown'])
def test_fast_cutout_equals_plain_cutout(image, mode):
  image = IMAGES[image]
  for pad, row, col in CUTOUTS:
    args = (pad, tf.constant(row), tf.constant(col))
    np.testing.assert_array_equal(_run(ra.cutout, image, args, mode),
                                  _run(plain.cutout, image, args, mode),
                                  err_msg=f'cutout{pad, row, col} {mode}')


def test_fast_ops_take_tensor_arguments():
  """Arguments that are tensors (not Python numbers) take the general paths."""
  image = tf.constant(IMAGES['chelsea'])
  for name, value in [('solarize', tf.constant(200)), ('solarize', tf.constant(256)),
                      ('solarize_add', tf.constant(-70, tf.int64)),
                      ('solarize_add', tf.constant(90, tf.int64)),
                      ('posterize', tf.constant(3, tf.uint8)),
                      ('translate_x', tf.constant(-4.0)), ('translate_y', tf.constant(2.5)),
                      ('translate_x', tf.constant(6))]:
    np.testing.assert_array_equal(getattr(ra, name)(image, value),
                                  getattr(plain, name)(image, value), err_msg=name)


@pytest.mark.parametrize('magnitude', [5, 10, 15, 7.3])
def test_distort_fast_equals_plain_over_many_seeds(magnitude):
  """Whole RandAugment, in a tf.data map as training runs it: fast and plain op tables give
  the same images for the same seeds (64 seeds x 2 layers cover every op with high
  probability; the test checks that all 16 were drawn)."""
  image = IMAGES['chelsea']
  seeds = np.stack([np.arange(64), np.full(64, 5)], axis=1)

  def dataset(ops):
    return tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda seed: ra.distort(tf.constant(image), 2, magnitude, seed, ops=ops))

  # Sharpness is exact in the fast table (see above), so it is the fast one in both.
  reference_ops = {**plain.OP_FUNCTIONS, 'Sharpness': ra.sharpness}
  for fast, reference in zip(dataset(None), dataset(reference_ops)):
    np.testing.assert_array_equal(fast, reference)
  drawn = {int(ra.choose_op(ra.layer_seeds(tf.constant(s, tf.int64), layer)[0]))
           for s in seeds for layer in range(2)}
  assert drawn == set(range(len(ra.OPS)))


def test_bench_input_cond_chain_is_the_same_randaugment():
  """rs.tools.bench_input's baseline dispatches with 16 tf.conds per layer (the official way); with
  the same op table it gives the very images of `distort`'s one tf.switch_case per layer."""
  from rs.tools import bench_input
  image = tf.constant(IMAGES['chelsea'])
  for s in range(12):
    seed = tf.constant([s, 3], tf.int64)
    np.testing.assert_array_equal(
        bench_input.cond_chain_randaugment(image, 2, 10, seed),
        ra.distort(image, 2, 10, seed, ops=plain.OP_FUNCTIONS))
