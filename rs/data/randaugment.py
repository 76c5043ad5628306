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
constant fill instead of the official wrap/unwrap trick (see `projective_transform`). The
fill value is a scalar (the official replace value is the same 128 in all three channels).

Speed. The ops are formulated for TF's CPU kernels, since RandAugment is a large share of
the host's work per image. rs.data.randaugment_plain keeps the direct transcription of each
op changed here; the outputs are bit-identical (tests/test_randaugment_fast.py), except
Sharpness, which is exact where the convolution's rounding varies by CPU; the blend scales
that rounding, to up to ceil(|1 - factor|) levels (2 at M = 15, 3 at M = 20; see `sharpness`).
Measured kernel costs behind the formulations (tf.data map, one thread, a 160x160x3 photo, in ms):
`tf.where` (SelectV2) 0.45-0.6 whatever the dtype, while uint8 compare / min / add / and /
xor cost 0.02-0.05 and casts 0.05-0.1; a binary op that broadcasts along the channel axis
((3,) or (H, W, 1) against (H, W, 3)) ~0.25, but against a scalar, or along the leading axis
of a channel-major (3, H, W) image, next to nothing; `tf.stack` of three channels 0.45, a
transpose 0.07; `tf.gather` of 76,800 indices ~0.5; the 3x3 `depthwise_conv2d` 2.4;
ImageProjectiveTransformV3 0.8 (Translate, a whole-pixel shift, slices instead). Graph size
counts too: the op choice's lowered `tf.switch_case` walks every node of the branches it does
not take, ~0.2 us each (see `_height_width`).
"""
import math

import numpy as np
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
  return _blend_float(tf.cast(image1, tf.float32), tf.cast(image2, tf.float32), factor)


def _blend_float(degenerate, image, factor):
  """`blend` of float32 operands; `degenerate` may be a scalar (a cheap scalar broadcast).

  The same float32 operations in the same order as `blend`, so the same bits.
  """
  return _to_uint8(degenerate + factor * (image - degenerate), factor)


def _to_uint8(values, factor):
  """Truncate a blend to uint8, clipping first unless 0 < factor < 1 (see `blend`)."""
  if isinstance(factor, (int, float)) and 0.0 < factor < 1.0:
    return tf.cast(values, tf.uint8)
  # float -> uint8 casts truncate (the values are non-negative here, so this is floor).
  return tf.cast(tf.clip_by_value(values, 0.0, 255.0), tf.uint8)


def _channels_first(image):
  """(H, W, C) -> (C, H, W): per-channel values then broadcast along the leading axis, which
  is nearly free, where a (C,) vector against (H, W, C) costs ~0.25 ms per op."""
  return tf.transpose(image, [2, 0, 1])


def _channels_last(image):
  return tf.transpose(image, [1, 2, 0])


def _height_width(image):
  """(H, W) as Python ints when the static shape has them, else as scalar tensors.

  Static sizes make slice bounds constants: fewer graph nodes, which matters beyond the op's
  own run time, since `distort`'s lowered `tf.switch_case` visits every node of the 15
  branches it does not take (~0.2 us each; ~240 us per layer for the 16 ops as first written).
  """
  return tuple(image.shape[i] if image.shape[i] is not None else tf.shape(image)[i]
               for i in (0, 1))


def autocontrast(image):
  """Stretch each channel linearly so its min becomes 0 and its max 255 (PIL autocontrast).

  All channels at once, channel-major, instead of three `tf.cond`s and a `tf.stack` (0.4
  instead of 0.65 ms): a constant channel gets scale 1 and offset 0, i.e. stays unchanged;
  the others get the same float32 scale and offset, applied in the same order, as one at a
  time.
  """
  channels = _channels_first(image)
  lo = tf.cast(tf.reduce_min(channels, axis=[1, 2], keepdims=True), tf.float32)
  hi = tf.cast(tf.reduce_max(channels, axis=[1, 2], keepdims=True), tf.float32)
  stretch = hi > lo
  scale = tf.where(stretch, 255.0 / (hi - lo), 1.0)  # (3, 1, 1): where on 3 values is cheap
  offset = tf.where(stretch, -lo * scale, 0.0)
  values = tf.cast(channels, tf.float32) * scale + offset
  return _channels_last(tf.cast(tf.clip_by_value(values, 0.0, 255.0), tf.uint8))


def equalize(image):
  """Per-channel histogram equalization (PIL ImageOps.equalize).

  The three lookup tables are built side by side (3 x 256 values) from one 768-bin histogram
  of the channel-major image with channel c's values moved to 256 c + v, and applied by one
  gather (1.1 instead of 1.4-1.7 ms; the gather is ~0.5 of it).
  """
  offsets = tf.constant([0, 256, 512], tf.int32)[:, None, None]
  values = tf.cast(_channels_first(image), tf.int32) + offsets
  # With range [0, 767] and 768 bins, every integer value v lands in bin v (as 256 bins over
  # [0, 255] do for one channel: v * 768 / 767 is v plus a fraction in [0, 1)).
  histogram = tf.reshape(tf.histogram_fixed_width(values, [0, 767], nbins=768), [3, 256])
  # As PIL: the count of the highest occupied value is left out of the step.
  top = tf.gather(histogram, tf.reduce_max(values, axis=[1, 2]) - offsets[:, 0, 0],
                  batch_dims=1)
  step = ((tf.reduce_sum(histogram, axis=1) - top) // 255)[:, None]
  safe_step = tf.maximum(step, 1)  # step 0 channels keep their values (below)
  lut = (tf.cumsum(histogram, axis=1) + safe_step // 2) // safe_step
  # Value v maps to the (rounded, normalized) count of the values *below* v.
  lut = tf.clip_by_value(tf.pad(lut[:, :-1], [[0, 0], [1, 0]]), 0, 255)
  # step 0 (a single value, or very few pixels outside the top one): unchanged.
  lut = tf.cast(tf.where(step == 0, tf.range(256)[None], lut), tf.uint8)
  return _channels_last(tf.gather(tf.reshape(lut, [-1]), values))


def invert(image):
  return 255 - tf.convert_to_tensor(image)


def posterize(image, bits):
  """Keep the top `bits` bits of every value. The shift 8 - bits becomes a uint8 (wrapping)
  and TF clamps it to 7, so bits 0 or > 8 keep the top bit, as the official code does.

  One AND with the mask that the official shifts leave of 255, computed by those very shifts
  (so the same wrapping and clamping), instead of two shifts of the image (0.08 vs 0.12 ms).
  """
  image = tf.convert_to_tensor(image)
  shift = 8 - bits
  mask = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.constant(255, image.dtype), shift),
                               shift)
  return tf.bitwise.bitwise_and(image, mask)


def solarize(image, threshold=128):
  """Invert values >= threshold. The threshold is cast to uint8 first, as in the official
  code, so it wraps modulo 256: 256 inverts everything, 384 acts as 128.

  No `tf.where` (0.45 ms): the policy's thresholds are Python ints, 256 (M=10, 20; wraps to 0:
  Invert) or 128 (M=5, 15: min(x, 255 - x), since 255 - x >= 128 > x below 128 and
  255 - x <= 127 < x above). Others XOR with 255 (= 255 - x on uint8) where x >= threshold.
  """
  image = tf.convert_to_tensor(image)
  if isinstance(threshold, int):
    wrapped = threshold % 256  # what the int32 -> uint8 cast gives
    if wrapped == 0:
      return 255 - image
    if wrapped == 128:
      return tf.minimum(image, 255 - image)
  threshold = tf.cast(threshold, tf.uint8)  # int32 -> uint8 casts wrap
  flip = tf.cast(image >= threshold, tf.uint8) * 255
  return tf.bitwise.bitwise_xor(image, flip)


def solarize_add(image, addition, threshold=128):
  """Add `addition` (clipped to [0, 255]) to values below `threshold`; others unchanged.

  In uint8 without `tf.where` or int64 (0.2 instead of 0.7 ms): below the threshold add
  min(addition, 255 - x) (subtract min(-addition, x) for a negative one), elsewhere add 0.
  """
  image = tf.convert_to_tensor(image)
  below = tf.cast(image < threshold, image.dtype)  # 0 or 1
  if isinstance(addition, int):
    if addition >= 0:
      return image + tf.minimum(255 - image, below * min(addition, 255))
    return image - tf.minimum(image, below * min(-addition, 255))
  addition = tf.cast(addition, tf.int32)
  up = tf.cast(tf.clip_by_value(addition, 0, 255), image.dtype)
  down = tf.cast(tf.clip_by_value(-addition, 0, 255), image.dtype)
  return image + tf.minimum(255 - image, below * up) - tf.minimum(image, below * down)


def _grayscale(image):
  """TF's luma (0.2989, 0.5870, 0.1140), rounded back to uint8, shape (H, W, 1)."""
  return tf.image.rgb_to_grayscale(image)


def color(image, factor):
  """Saturation: blend from the grayscale image (PIL ImageEnhance.Color).

  Left as it is: `rgb_to_grayscale` is most of its cost, and a float gray repeated across
  channels (`tf.tile`, `tf.concat`) or a channel-major blend measured no faster.
  """
  return blend(tf.image.grayscale_to_rgb(_grayscale(image)), image, factor)


def contrast(image, factor, mean='official'):
  """Blend from a constant gray image (PIL ImageEnhance.Contrast).

  mean='official': the constant is (H*W)/256 clipped to 255 and truncated, the official
  code's "mean" (sum of a 256-bin histogram / 256), which depends only on the image size.
  mean='true': the mean grayscale value rounded to an integer, as PIL computes it.
  The constant is a scalar in the blend (no constant image); 'official' needs no grayscale.
  """
  image = tf.convert_to_tensor(image)
  if mean == 'official':
    height, width = _height_width(image)
    if isinstance(height, int) and isinstance(width, int):
      level = float(min(height * width // 256, 255))
    else:
      # float32(H*W) / 256, clipped and truncated, as a uint8 cast of the official level.
      pixels = tf.cast(height * width, tf.float32)
      level = tf.floor(tf.clip_by_value(pixels / 256.0, 0.0, 255.0))
  elif mean == 'true':
    level = tf.floor(tf.reduce_mean(tf.cast(_grayscale(image), tf.float32)) + 0.5)
  else:
    raise ValueError(f'contrast mean must be one of {CONTRAST_MEANS}, got {mean!r}')
  return _blend_float(level, tf.cast(image, tf.float32), factor)


def brightness(image, factor):
  """Blend from black (PIL ImageEnhance.Brightness): 0 + factor * (x - 0) is factor * x."""
  return _to_uint8(factor * tf.cast(image, tf.float32), factor)


def sharpness(image, factor):
  """Blend from PIL's SMOOTH-filtered image, whose one-pixel border is the original's.

  The smoothed value is floor((sum of the 8 neighbours + 5 x centre) / 13), computed exactly:
  the sum of integers is exact in float32 (below 2^24), and one correctly rounded division
  by 13 cannot cross an integer (a non-multiple of 13 stays at least 1/13 away from one). The
  official code convolves with the float32 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 and
  truncates; its rounding depends on the CPU's convolution kernel (Eigen and oneDNN disagree
  on ~0.4% of pixels, by one level, e.g. a flat patch of value v coming out v - 1), so
  rs.data.randaugment_plain.sharpness is no bit-exact reference. The convolution's error is
  far below 1/13, so its smoothed image is at most one level below this one's, only where 13
  divides the sum. The blend d + f (x - d) = (1 - f) d + f x scales that level by |1 - f|:
  the outputs differ by at most ceil(|1 - f|) levels (a float32 blend error of ~1e-4 level
  could add one only for |1 - f| just below an integer; at integer |1 - f| the blend is
  exact). That is one level for factors in [0, 2], i.e. up to M = 10 (1.9), but 2 at M = 15
  (2.8) and 3 at M = 20 (3.7); on photographs the bound is reached (docs/data.md).
  Tests compare this op bit for bit with numpy's integer arithmetic and within
  ceil(|1 - f|) levels with the convolution.
  Nine slices and adds cost 0.4 ms where `depthwise_conv2d` costs 2.8 ms.

  The nine neighbours are contiguous slices of the flattened image: pixel (i, j) channel k
  sits at (i W + j) 3 + k, so neighbour (r, c) of every pixel is the slice starting
  (r W + c) 3 further on. Output rows 1..H-2 are computed for all W columns at once; the
  last two columns of each such row mix two image rows and are dropped. The border is not
  blended: blend(x, x, f) is x, so the original border is put around the blended interior.
  """
  image = tf.convert_to_tensor(image)
  height, width = _height_width(image)

  def sharpened():
    pixels = tf.reshape(tf.cast(image, tf.float32), [-1])
    length = ((height - 2) * width - 2) * 3  # the (2, 2) neighbour's slice ends at the end

    def neighbour(values, row, col):
      return tf.slice(values, [(row * width + col) * 3], [length])

    total = None
    for row in range(3):
      for col in range(3):
        term = neighbour(pixels, row, col)
        term = 5.0 * term if (row, col) == (1, 1) else term
        total = term if total is None else total + term
    centre = neighbour(pixels, 1, 1)  # the original interior, in the same layout
    blended = _blend_float(tf.floor(total / 13.0), centre, factor)
    rows = tf.reshape(tf.pad(blended, [[0, 6]]), [height - 2, width, 3])
    middle = tf.concat([image[1:-1, :1], rows[:, :width - 2], image[1:-1, -1:]], axis=1)
    out = tf.concat([image[:1], middle, image[-1:]], axis=0)
    out.set_shape(image.shape)
    return out

  # No interior (H or W below 3): all border, which the VALID convolution leaves as it is.
  if isinstance(height, int) and isinstance(width, int):
    return sharpened() if min(height, width) >= 3 else image
  return tf.cond(tf.minimum(height, width) >= 3, sharpened, lambda: image)


def cutout(image, pad_size, center_h, center_w, replace=REPLACE):
  """Fill rows [center_h - pad, center_h + pad) x the same columns (clipped) with `replace`.

  Assembled from slices and a filled patch (0.1 ms) instead of a 2-D mask and `tf.where`
  (0.55 ms). The bounds are clipped into the image and end >= start, so an empty square
  (pad 0, or a centre far outside) leaves the image as it is.
  """
  image = tf.convert_to_tensor(image)
  height, width = _height_width(image)
  top = tf.clip_by_value(center_h - pad_size, 0, height)
  bottom = tf.clip_by_value(center_h + pad_size, top, height)
  left = tf.clip_by_value(center_w - pad_size, 0, width)
  right = tf.clip_by_value(center_w + pad_size, left, width)
  patch = tf.fill([bottom - top, right - left, image.shape[2]], tf.cast(replace, image.dtype))
  band = image[top:bottom]
  band = tf.concat([band[:, :left], patch, band[:, right:]], axis=1)
  out = tf.concat([image[:top], band, image[bottom:]], axis=0)
  out.set_shape(image.shape)
  return out


# ---------------------------------------------------------------------------------------------
# Geometric ops. A transform [a0, a1, a2, b0, b1, b2, 0, 0] maps each *output* pixel index
# (x = column, y = row) to the input position (a0 x + a1 y + a2, b0 x + b1 y + b2), read with
# nearest-neighbour rounding; outside the input the pixel is `replace`.


def projective_transform(image, transform, replace):
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
  in index coordinates, the transform contrib's `rotate` builds. Static sizes enter as
  float32 constants (the same values and float32 operations as sizes read at run time).
  """
  image = tf.convert_to_tensor(image)
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  height, width = (tf.cast(size, tf.float32) for size in _height_width(image))
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return projective_transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


def shear_x(image, level, replace=REPLACE):
  """Output (x, y) reads input (x + level * y, y): rows slide sideways, row 0 stays put."""
  level = tf.cast(level, tf.float32)
  return projective_transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def shear_y(image, level, replace=REPLACE):
  """Output (x, y) reads input (x, level * x + y): columns slide, column 0 stays put."""
  level = tf.cast(level, tf.float32)
  return projective_transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


def _translate(image, pixels, axis, replace):
  """Output index i along `axis` reads input i + pixels (`replace` outside the input).

  For a whole number of pixels (the policy's 100 M/10 at integer M) the transform kernel's
  position i + pixels is exact, so its nearest sampling is a plain shift: padding with
  `replace` and a slice (0.1-0.2 ms) instead of ImageProjectiveTransformV3 (0.7 ms). Integer
  `pixels` (as `apply_op` passes whole-pixel shifts) take the shift directly; float ones
  are checked when the graph runs, and fractional shifts go through the transform.
  """
  image = tf.convert_to_tensor(image)
  size = _height_width(image)[axis]

  def shift(step):  # int32, |step| <= size (more would only add fill)
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [tf.maximum(-step, 0), tf.maximum(step, 0)]
    padded = tf.pad(image, paddings, constant_values=tf.cast(replace, image.dtype))
    begin = tf.maximum(step, 0)
    return padded[begin:begin + size] if axis == 0 else padded[:, begin:begin + size]

  def transform():
    offsets = [pixels, 0.0] if axis == 1 else [0.0, pixels]
    return projective_transform(image, [1.0, 0.0, offsets[0], 0.0, 1.0, offsets[1], 0.0, 0.0],
                                replace)

  if isinstance(pixels, int) or (isinstance(pixels, tf.Tensor) and pixels.dtype.is_integer):
    out = shift(tf.cast(tf.clip_by_value(pixels, -size, size), tf.int32))
  else:
    pixels = tf.cast(pixels, tf.float32)
    limit = tf.cast(size, tf.float32)  # clipping in float also keeps the int cast in range
    whole = lambda: shift(tf.cast(tf.clip_by_value(pixels, -limit, limit), tf.int32))
    out = tf.cond(tf.equal(pixels, tf.round(pixels)), whole, transform)
  out.set_shape(image.shape)
  return out


def translate_x(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x + pixels, y): positive `pixels` moves the content left.

  (The official code calls contrib `translate(image, [-pixels, 0])`, i.e. this transform.)
  """
  return _translate(image, pixels, 1, replace)


def translate_y(image, pixels, replace=REPLACE):
  """Output (x, y) reads input (x, y + pixels): positive `pixels` moves the content up."""
  return _translate(image, pixels, 0, replace)


# The op of each name; rs.data.randaugment_plain.OP_FUNCTIONS has the plain formulations.
OP_FUNCTIONS = {
    'AutoContrast': autocontrast, 'Equalize': equalize, 'Invert': invert, 'Rotate': rotate,
    'Posterize': posterize, 'Solarize': solarize, 'Color': color, 'Contrast': contrast,
    'Brightness': brightness, 'Sharpness': sharpness, 'ShearX': shear_x, 'ShearY': shear_y,
    'TranslateX': translate_x, 'TranslateY': translate_y, 'Cutout': cutout,
    'SolarizeAdd': solarize_add,
}


# ---------------------------------------------------------------------------------------------
# The policy.


def _random_sign(seed):
  """+1 or -1 with probability 1/2 each."""
  return tf.where(tf.random.stateless_uniform([], seed) >= 0.5, 1.0, -1.0)


def apply_op(image, name: str, magnitude: float, seed, contrast_mean='official', ops=None):
  """Apply op `name` at magnitude M to a uint8 (H, W, 3) image.

  `seed` (shape [2] int) drives the op's own randomness: the sign of Rotate/Shear/Translate
  and the Cutout centre (uniform over all pixels, so the square may be clipped by the border).
  `ops`: the table of op functions (default OP_FUNCTIONS; randaugment_plain.OP_FUNCTIONS for
  the plain formulations, same arguments and draws).
  """
  ops = OP_FUNCTIONS if ops is None else ops
  image = tf.convert_to_tensor(image)
  arg = level_to_arg(name, magnitude)
  sign_seed, row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if name in ('TranslateX', 'TranslateY') and float(np.float32(arg)).is_integer():
    # A whole number of pixels: an int32 +-arg (as float32 it is the same +-float32(arg)),
    # from which the translate ops know without a runtime test that a shift is exact.
    arg = tf.cast(_random_sign(sign_seed), tf.int32) * int(np.float32(arg))
  elif name in _SIGNED:
    arg = _random_sign(sign_seed) * arg
  if name == 'Cutout':
    shape = tf.shape(image)
    center_h = tf.random.stateless_uniform([], row_seed, 0, shape[0], dtype=tf.int32)
    center_w = tf.random.stateless_uniform([], col_seed, 0, shape[1], dtype=tf.int32)
    return ops[name](image, arg, center_h, center_w)
  if name == 'Contrast':
    return ops[name](image, arg, mean=contrast_mean)
  return ops[name](image) if arg is None else ops[name](image, arg)


def layer_seeds(seed, layer: int):
  """(seed of the op choice, seed of the op's own randomness) for one layer."""
  layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
  choice_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
  return choice_seed, op_seed


def choose_op(choice_seed):
  """Index into OPS, uniform."""
  return tf.random.stateless_uniform([], choice_seed, 0, len(OPS), dtype=tf.int32)


def distort(image, num_layers: int, magnitude: float, seed, contrast_mean='official',
            ops=None):
  """RandAugment: `num_layers` ops, each chosen uniformly from OPS and always applied.

  uint8 (H, W, 3) in and out; a pure function of (image, seed), in eager and graph mode.
  `ops` as in `apply_op`.
  """
  if contrast_mean not in CONTRAST_MEANS:
    raise ValueError(f'contrast_mean must be one of {CONTRAST_MEANS}, got {contrast_mean!r}')
  image = tf.convert_to_tensor(image)
  seed = tf.convert_to_tensor(seed)
  for layer in range(num_layers):
    choice_seed, op_seed = layer_seeds(seed, layer)
    branches = [(lambda name=name, x=image: apply_op(x, name, magnitude, op_seed,
                                                     contrast_mean, ops))
                for name in OPS]
    shape = image.shape
    image = tf.switch_case(choose_op(choice_seed), branches)
    image.set_shape(shape)
  return image
