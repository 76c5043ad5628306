"""The straightforward formulation of the RandAugment ops that rs.data.randaugment speeds up.

Each function here is the direct transcription of the official op (per-channel loops,
`tf.where` masks, a depthwise convolution, one ImageProjectiveTransformV3 per geometric op),
as rs first wrote them. They serve twice:

* as the reference: tests/test_randaugment.py checks that every fast op in
  rs.data.randaugment gives bit-identical uint8 outputs (tests/test_randaugment_fast.py;
  Sharpness within ceil(|1 - factor|) levels, 2 at M = 15: the fast one is exact, this
  one's rounding varies by CPU and the blend scales it);
* as the "plain" RandAugment of the rs.tools.bench_input baseline (a straightforward tf.data port).

`OP_FUNCTIONS` is rs.data.randaugment's op table with these versions swapped in (Invert,
Color, ShearX and ShearY have a single formulation, shared); pass it as `ops=` to
`randaugment.apply_op` / `randaugment.distort`, which keep the same policy, argument table and
random draws, so plain and fast RandAugment differ only in how each op is computed.
"""
import math

import tensorflow as tf

from rs.data import randaugment as ra
from rs.data.randaugment import REPLACE, blend


def autocontrast(image):
  """Stretch each channel linearly so its min becomes 0 and its max 255 (PIL autocontrast)."""

  def stretch(channel):
    lo = tf.cast(tf.reduce_min(channel), tf.float32)
    hi = tf.cast(tf.reduce_max(channel), tf.float32)

    def scaled():
      scale = 255.0 / (hi - lo)
      offset = -lo * scale
      values = tf.cast(channel, tf.float32) * scale + offset
      return tf.cast(tf.clip_by_value(values, 0.0, 255.0), tf.uint8)

    # A constant channel is left alone (no division by zero).
    return tf.cond(hi > lo, scaled, lambda: channel)

  return tf.stack([stretch(image[:, :, c]) for c in range(3)], axis=2)


def equalize(image):
  """Per-channel histogram equalization (PIL ImageOps.equalize)."""

  def equalize_channel(channel):
    values = tf.cast(channel, tf.int32)
    # With range [0, 255] and 256 bins, every integer value v lands in bin v.
    histogram = tf.histogram_fixed_width(values, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    # As PIL: the count of the highest occupied value is left out of the step.
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def remapped():
      lut = (tf.cumsum(histogram) + step // 2) // step
      # Value v maps to the (rounded, normalized) count of the values *below* v.
      lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
      return tf.gather(lut, values)

    # step 0 (a single value, or very few pixels outside the top one): unchanged.
    return tf.cast(tf.cond(tf.equal(step, 0), lambda: values, remapped), tf.uint8)

  return tf.stack([equalize_channel(image[:, :, c]) for c in range(3)], axis=2)


def posterize(image, bits):
  """Keep the top `bits` bits of every value. The shift 8 - bits becomes a uint8 (wrapping)
  and TF clamps it to 7, so bits 0 or > 8 keep the top bit, as the official code does."""
  shift = 8 - bits
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold=128):
  """Invert values >= threshold. The threshold is cast to uint8 first, as in the official
  code, so it wraps modulo 256: 256 inverts everything, 384 acts as 128."""
  threshold = tf.cast(threshold, tf.uint8)  # int32 -> uint8 casts wrap
  return tf.where(image < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
  """Add `addition` (clipped to [0, 255]) to values below `threshold`; others unchanged."""
  added = tf.clip_by_value(tf.cast(image, tf.int64) + addition, 0, 255)
  return tf.where(image < threshold, tf.cast(added, tf.uint8), image)


def contrast(image, factor, mean='official'):
  """Blend from a constant gray image (PIL ImageEnhance.Contrast); see ra.contrast."""
  gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
  if mean == 'official':
    level = tf.cast(tf.size(gray), tf.float32) / 256.0
    level = tf.clip_by_value(level, 0.0, 255.0)
  elif mean == 'true':
    level = tf.floor(tf.reduce_mean(gray) + 0.5)
  else:
    raise ValueError(f'contrast mean must be one of {ra.CONTRAST_MEANS}, got {mean!r}')
  degenerate = tf.cast(tf.ones_like(image, tf.float32) * level, tf.uint8)
  return blend(degenerate, image, factor)


def brightness(image, factor):
  """Blend from black (PIL ImageEnhance.Brightness)."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend from PIL's SMOOTH-filtered image, whose one-pixel border is the original's."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel,
                                  strides=[1, 1, 1, 1], padding='VALID')[0]
  smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
  # VALID drops the border; put the original border back around the smoothed interior.
  inside = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(inside, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(degenerate, image, factor)


def cutout(image, pad_size, center_h, center_w, replace=REPLACE):
  """Fill rows [center_h - pad, center_h + pad) x the same columns (clipped) with `replace`."""
  shape = tf.shape(image)
  rows = tf.range(shape[0])[:, None, None]
  cols = tf.range(shape[1])[None, :, None]
  inside = ((rows >= center_h - pad_size) & (rows < center_h + pad_size) &
            (cols >= center_w - pad_size) & (cols < center_w + pad_size))
  return tf.where(inside, tf.cast(replace, image.dtype), image)


def rotate(image, degrees, replace=REPLACE):
  """Rotate by `degrees` about the image centre (see ra.rotate), sizes read at run time."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  shape = tf.cast(tf.shape(image), tf.float32)
  height, width = shape[0], shape[1]
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return ra.projective_transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0],
                                 replace)


def translate_x(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x + pixels, y), through the projective transform."""
  pixels = tf.cast(pixels, tf.float32)
  return ra.projective_transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def translate_y(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x, y + pixels), through the projective transform."""
  pixels = tf.cast(pixels, tf.float32)
  return ra.projective_transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], replace)


OP_FUNCTIONS = {
    **ra.OP_FUNCTIONS,
    'AutoContrast': autocontrast, 'Equalize': equalize, 'Rotate': rotate,
    'Posterize': posterize, 'Solarize': solarize, 'SolarizeAdd': solarize_add,
    'Contrast': contrast, 'Brightness': brightness, 'Sharpness': sharpness, 'Cutout': cutout,
    'TranslateX': translate_x, 'TranslateY': translate_y,
}
