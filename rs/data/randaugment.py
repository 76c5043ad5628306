"""RandAugment as the official ResNet-RS TF1 code applies it, in plain TensorFlow graph ops.

Reference: `distort_image_with_randaugment` in tensorflow/tpu
models/official/efficientnet/autoaugment.py (facts sheet section 4.3), which ResNet-RS uses
on uint8 images after the crop, resize and flip. Everything here is a TF op (no py_function,
contrib or addons), so it runs inside `tf.data` `map`.

The policy: `num_layers` times, pick one of the 16 `OPS` uniformly at random and always apply
it (the official code draws a per-op probability but never uses it). The magnitude M is fixed
and scaled by M/10 (`level_to_arg`); Rotate, Shear and Translate get a random sign. Geometric
ops and Cutout fill with gray 128. Translate (100 px) and Cutout (pad 40 px) are in pixels,
independent of the image size.

Kept from the official code, where it differs from the RandAugment paper, from PIL or from
other ports (timm, torchvision):

* Contrast blends towards the constant (H*W)/256 (the pixel count of a 256-bin histogram
  divided by 256), not the mean intensity; clipped to 255, so it only depends on the image
  size. `contrast_mean='true'` uses the mean grayscale value (rounded, as PIL does) instead.
* Solarize's threshold int(256*M/10) is converted to uint8 before the comparison and so wraps
  modulo 256: at M=10 the threshold 256 becomes 0 and Solarize inverts every pixel; at M=15,
  384 becomes 128 (the usual solarize). TF1 (numpy < 1.24) and current TF both wrap.
* Posterize keeps int(4*M/10) bits, so larger M posterizes *less* (6 bits at M=15, none
  removed at M=20). TF's shift ops clamp the shift 8 - bits into [0, 7] after its uint8 cast,
  so 0 bits (M < 2.5) and more than 8 bits (M >= 22.5) both keep just the top bit.
* Blends (Color, Contrast, Brightness, Sharpness) run in float32 and truncate to uint8, with
  clipping only when extrapolating, as PIL's `Image.blend` does.
* Sampling is nearest-neighbour (contrib's default) about the image centre; positive Rotate
  degrees turn the content counter-clockwise (as PIL's `Image.rotate`; the official docstring
  says clockwise, which does not matter since the sign is random).

Differences from the official code that do not change results: randomness is stateless (a
pure function of `seed`, for resumable input pipelines), the op choice is one `tf.switch_case`
instead of 16 `tf.cond`s, and the geometric ops use `ImageProjectiveTransformV3`'s own
constant fill instead of the official wrap/unwrap trick (see `_transform`). The fill value is
a scalar (the official replace value is the same 128 in all three channels).
"""
import math

import tensorflow as tf

OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
       'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
       'Cutout', 'SolarizeAdd')

MAX_LEVEL = 10.0
REPLACE = 128  # gray fill of the geometric ops and Cutout
TRANSLATE_CONST = 100  # pixels at M = 10
CUTOUT_CONST = 40  # half side of the Cutout square at M = 10
CONTRAST_MEANS = ('official', 'true')

# Ops whose argument gets a random sign (the official `_randomly_negate_tensor`).
_SIGNED = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def level_to_arg(name: str, magnitude: float):
  """The argument of op `name` at magnitude M, before any random sign; None if it has none.

  The formulas (and their float rounding) are the official ones: e.g. Rotate 30*M/10 degrees,
  Shear 0.3*M/10, Translate 100*M/10 px, enhance factor 1.8*M/10 + 0.1, Posterize
  int(4*M/10) bits, Solarize threshold int(256*M/10), SolarizeAdd int(110*M/10), Cutout pad
  int(40*M/10).
  """
  scale = magnitude / MAX_LEVEL
  if name in ('AutoContrast', 'Equalize', 'Invert'):
    return None
  if name == 'Rotate':
    return scale * 30.0
  if name in ('ShearX', 'ShearY'):
    return scale * 0.3
  if name in ('TranslateX', 'TranslateY'):
    return scale * float(TRANSLATE_CONST)
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return scale * 1.8 + 0.1
  if name == 'Posterize':
    return int(scale * 4)
  if name == 'Solarize':
    return int(scale * 256)
  if name == 'SolarizeAdd':
    return int(scale * 110)
  if name == 'Cutout':
    return int(scale * CUTOUT_CONST)
  raise ValueError(f'unknown RandAugment op {name!r}')


# ---------------------------------------------------------------------------------------------
# Pixel ops. `image` is a uint8 (H, W, 3) tensor throughout.


def blend(image1, image2, factor):
  """image1 + factor * (image2 - image1) in float32, truncated to uint8 (PIL's Image.blend).

  factor 0 gives image1 (the degenerate image), 1 gives image2 (the original). Between 0 and
  1 the result stays in range and is only truncated; otherwise it is clipped to [0, 255]
  first. The float32 formula reproduces factor 0 and 1 exactly, so for tensor factors the
  clipped branch serves all cases.
  """
  if isinstance(factor, (int, float)):
    if factor == 0.0:
      return tf.convert_to_tensor(image1)
    if factor == 1.0:
      return tf.convert_to_tensor(image2)
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  blended = image1 + factor * (image2 - image1)
  if isinstance(factor, (int, float)) and 0.0 < factor < 1.0:
    return tf.cast(blended, tf.uint8)
  # float -> uint8 casts truncate (the values are non-negative here, so this is floor).
  return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


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


def invert(image):
  return 255 - tf.convert_to_tensor(image)


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


def _grayscale(image):
  """TF's luma (0.2989, 0.5870, 0.1140), rounded back to uint8, shape (H, W, 1)."""
  return tf.image.rgb_to_grayscale(image)


def color(image, factor):
  """Saturation: blend from the grayscale image (PIL ImageEnhance.Color)."""
  return blend(tf.image.grayscale_to_rgb(_grayscale(image)), image, factor)


def contrast(image, factor, mean='official'):
  """Blend from a constant gray image (PIL ImageEnhance.Contrast).

  mean='official': the constant is (H*W)/256 clipped to 255 and truncated, the official
  code's "mean" (sum of a 256-bin histogram / 256), which depends only on the image size.
  mean='true': the mean grayscale value rounded to an integer, as PIL computes it.
  """
  gray = tf.cast(_grayscale(image), tf.float32)
  if mean == 'official':
    level = tf.cast(tf.size(gray), tf.float32) / 256.0
    level = tf.clip_by_value(level, 0.0, 255.0)
  elif mean == 'true':
    level = tf.floor(tf.reduce_mean(gray) + 0.5)
  else:
    raise ValueError(f'contrast mean must be one of {CONTRAST_MEANS}, got {mean!r}')
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


# ---------------------------------------------------------------------------------------------
# Geometric ops. A transform [a0, a1, a2, b0, b1, b2, 0, 0] maps each *output* pixel index
# (x = column, y = row) to the input position (a0 x + a1 y + a2, b0 x + b1 y + b2), read with
# nearest-neighbour rounding; outside the input the pixel is `replace`.


def _transform(image, transform, replace):
  """Apply one projective transform with nearest sampling and a constant fill.

  The official code appends a channel of ones, transforms with TF's constant fill of 0 and
  then paints every pixel whose extra channel came out 0 with `replace`. With nearest
  sampling that channel is 0 exactly where the rounded input position lies outside the
  image, which is where ImageProjectiveTransformV3 itself writes `fill_value` in CONSTANT
  mode (both kernels round the position and then check bounds), so this is equivalent.
  """
  transform = tf.cast(tf.stack(transform), tf.float32)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(replace, tf.float32), interpolation='NEAREST', fill_mode='CONSTANT')[0]
  out.set_shape(image.shape)
  return out


def rotate(image, degrees, replace=REPLACE):
  """Rotate by `degrees` about the image centre; positive turns the content counter-clockwise.

  The output pixel p reads the input at R(angle) (p - c) + c with c = ((W-1)/2, (H-1)/2)
  in index coordinates, the transform contrib's `rotate` builds.
  """
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  shape = tf.cast(tf.shape(image), tf.float32)
  height, width = shape[0], shape[1]
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


def shear_x(image, level, replace=REPLACE):
  """Output (x, y) reads input (x + level * y, y): rows slide sideways, row 0 stays put."""
  level = tf.cast(level, tf.float32)
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def shear_y(image, level, replace=REPLACE):
  """Output (x, y) reads input (x, level * x + y): columns slide, column 0 stays put."""
  level = tf.cast(level, tf.float32)
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


def translate_x(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x + pixels, y): positive `pixels` moves the content left.

  (The official code calls contrib `translate(image, [-pixels, 0])`, i.e. this transform.)
  """
  pixels = tf.cast(pixels, tf.float32)
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def translate_y(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x, y + pixels): positive `pixels` moves the content up."""
  pixels = tf.cast(pixels, tf.float32)
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], replace)


# ---------------------------------------------------------------------------------------------
# The policy.


def _random_sign(seed):
  """+1 or -1 with probability 1/2 each."""
  return tf.where(tf.random.stateless_uniform([], seed) >= 0.5, 1.0, -1.0)


def apply_op(image, name: str, magnitude: float, seed, contrast_mean='official'):
  """Apply op `name` at magnitude M to a uint8 (H, W, 3) image.

  `seed` (shape [2] int) drives the op's own randomness: the sign of Rotate/Shear/Translate
  and the Cutout centre (uniform over all pixels, so the square may be clipped by the border).
  """
  image = tf.convert_to_tensor(image)
  arg = level_to_arg(name, magnitude)
  sign_seed, row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if name in _SIGNED:
    arg = _random_sign(sign_seed) * arg
  if name == 'Cutout':
    shape = tf.shape(image)
    center_h = tf.random.stateless_uniform([], row_seed, 0, shape[0], dtype=tf.int32)
    center_w = tf.random.stateless_uniform([], col_seed, 0, shape[1], dtype=tf.int32)
    return cutout(image, arg, center_h, center_w)
  if name == 'Contrast':
    return contrast(image, arg, mean=contrast_mean)
  fn = {
      'AutoContrast': autocontrast, 'Equalize': equalize, 'Invert': invert,
      'Rotate': rotate, 'Posterize': posterize, 'Solarize': solarize, 'Color': color,
      'Brightness': brightness, 'Sharpness': sharpness, 'ShearX': shear_x,
      'ShearY': shear_y, 'TranslateX': translate_x, 'TranslateY': translate_y,
      'SolarizeAdd': solarize_add,
  }[name]
  return fn(image) if arg is None else fn(image, arg)


def _layer_seeds(seed, layer: int):
  """(seed of the op choice, seed of the op's own randomness) for one layer."""
  layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
  choice_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
  return choice_seed, op_seed


def _choose_op(choice_seed):
  """Index into OPS, uniform."""
  return tf.random.stateless_uniform([], choice_seed, 0, len(OPS), dtype=tf.int32)


def distort(image, num_layers: int, magnitude: float, seed, contrast_mean='official'):
  """RandAugment: `num_layers` ops, each chosen uniformly from OPS and always applied.

  uint8 (H, W, 3) in and out; a pure function of (image, seed), in eager and graph mode.
  """
  if contrast_mean not in CONTRAST_MEANS:
    raise ValueError(f'contrast_mean must be one of {CONTRAST_MEANS}, got {contrast_mean!r}')
  image = tf.convert_to_tensor(image)
  seed = tf.convert_to_tensor(seed)
  for layer in range(num_layers):
    choice_seed, op_seed = _layer_seeds(seed, layer)
    branches = [
        (lambda name=name, x=image: apply_op(x, name, magnitude, op_seed, contrast_mean))
        for name in OPS
    ]
    shape = image.shape
    image = tf.switch_case(_choose_op(choice_seed), branches)
    image.set_shape(shape)
  return image
