"""TensorFlow (tf.data) preprocessing of ImageNet-style images, as the official TF1 code does it.

Training (facts sheet 4.1): an Inception-style random crop (`sample_distorted_bounding_box`:
min object covered 0.1, aspect 3/4..4/3, area 0.08..1, 10 attempts; when it gives up, i.e.
returns the whole image, the eval center crop instead), decoded with the crop fused into the
JPEG decoder, TF1's bicubic resize to S x S, a random horizontal flip, then RandAugment on a
clipped uint8 copy. Randomness is stateless: each image's crop, flip and RandAugment are a pure
function of its `seed`, so a resumed run repeats an uninterrupted one exactly.

Evaluation (facts sheet 4.2): a center crop of side min(H, W) * S / (S + crop_padding),
offset ((H - side + 1) // 2, (W - side + 1) // 2), then TF1's bicubic resize
(`tf.compat.v1.image.resize_bicubic`: no half-pixel centers) to S x S. The release-time rule is
crop_padding=32 (so the kept fraction grows with S: 0.833 at 160, 0.909 at 320); the official
code later switched to a fixed fraction of 0.875, available as `crop_fraction=0.875`.
Images stay float on the 0..255 scale; rs.step.normalize applies the mean/std on device.
"""
import re

import tensorflow as tf

from rs.data import preprocess, randaugment

# The official inception crop's constants (TF1 resnet_preprocessing.py, facts sheet 4.1).
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 10
RESIZE_METHODS = ('bicubic', 'bilinear')


def center_crop_window(height, width, image_size: int, crop_padding: int = 32,
                       crop_fraction: float | None = None):
  """(offset_h, offset_w, side) of the official center crop, as int32 tensors."""
  fraction = (crop_fraction if crop_fraction is not None
              else image_size / (image_size + crop_padding))
  side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  return (height - side + 1) // 2, (width - side + 1) // 2, side


# Start and end of each format decode_image reads: a file cut short lacks its end (docs/data.md).
_JPEG_START, _JPEG_END = b'\xff\xd8\xff', b'\xff\xd9'
_PNG_START, _PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'  # the IEND chunk's type + CRC


def _ends(image_bytes: tf.Tensor, start: int, end: int) -> tf.Tensor:
  """The first `start` and last `end` bytes, joined (fewer when the file is shorter)."""
  size = tf.strings.length(image_bytes)
  return tf.strings.join([tf.strings.substr(image_bytes, 0, start),
                          tf.strings.substr(image_bytes, tf.maximum(size - end, 0), end)])


def _other_formats_well_formed(image_bytes: tf.Tensor) -> tf.Tensor:
  size = tf.strings.length(image_bytes)
  png = tf.equal(_ends(image_bytes, 8, 8), _PNG_START + _PNG_END)
  gif = tf.logical_or(tf.equal(_ends(image_bytes, 6, 1), b'GIF87a;'),
                      tf.equal(_ends(image_bytes, 6, 1), b'GIF89a;'))
  # A BMP has no end marker, but its header states the file size.
  bmp_size = tf.io.decode_raw(tf.strings.substr(image_bytes, tf.minimum(2, size), 4), tf.int32,
                              little_endian=True, fixed_length=4)[0]
  bmp = tf.logical_and(tf.equal(tf.strings.substr(image_bytes, 0, 2), b'BM'),
                       tf.equal(bmp_size, size))
  return tf.reduce_any(tf.stack([png, gif, bmp]))


def well_formed(image_bytes: tf.Tensor, otherwise=None) -> tf.Tensor:
  """Whether encoded bytes start like a JPEG, PNG, GIF or BMP and end where that format ends;
  for bytes that do not, `otherwise()` when given (a closer look, e.g. a whole decode).

  No decoding, a few string ops for a JPEG: it catches empty, non-image and truncated files (TF's
  decoders fail on all of them, but `decode_and_crop_jpeg` only when the crop reaches the cut).
  False is a suspicion, not a verdict: valid files with bytes after their end marker fail it
  too, hence `otherwise` (rs.data.streaming calls `decode_error` there).
  """
  jpeg = tf.equal(_ends(image_bytes, 3, 2), _JPEG_START + _JPEG_END)
  true = lambda: tf.constant(True)
  other = lambda: _other_formats_well_formed(image_bytes)
  if otherwise is not None:
    other = lambda: tf.cond(_other_formats_well_formed(image_bytes), true, otherwise)
  return tf.cond(jpeg, true, other)


def decode_error(image_bytes: bytes) -> str | None:
  """Why TF cannot decode an image whole, or None when it can. Eager and slow: for the few files
  `well_formed` doubts."""
  if not image_bytes:
    return 'empty file'
  try:
    decode_rgb(tf.constant(image_bytes))
  except tf.errors.OpError as e:
    # '{{function_node ...}} Invalid PNG data, size 28844 [Op:DecodeImage] name:' -> the middle.
    message = re.sub(r'\{\{[^}]*\}\}|\[Op:\w+\]|\s*name:\s*$', '', e.message).strip()
    message = message.splitlines()[0] if message else type(e).__name__
    for start, end, name in ((_JPEG_START, _JPEG_END, 'JPEG'), (_PNG_START, _PNG_END, 'PNG')):
      if image_bytes.startswith(start) and not image_bytes.endswith(end):
        return f'truncated: no {name} end marker ({message})'  # TF's JPEG message says less
    return message
  return None


def grayscale(image: tf.Tensor) -> tf.Tensor:
  """(..., 3) -> (..., 1), keeping the dtype: ITU-R 601 luma with its weights scaled to sum to
  1 (TF's rgb_to_grayscale sums to 0.9999), so a gray pixel stays exactly itself; uint8 is
  rounded. rs.data.preprocess.with_channels computes the same in numpy."""
  gray = tf.tensordot(tf.cast(image, tf.float32), tf.constant(preprocess.GRAY_WEIGHTS),
                      axes=[[-1], [0]])[..., None]
  if image.dtype == tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(gray), 0, 255), tf.uint8)
  return tf.cast(gray, image.dtype)


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
  """Any JPEG/PNG/GIF/BMP as uint8 (H, W, 3); grayscale images become RGB."""
  return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def resize_bicubic(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """TF1's `resize_bicubic` (the official code's): float32 out, may overshoot 0..255."""
  return tf.compat.v1.image.resize_bicubic(image[None], [image_size, image_size])[0]


def eval_image(image: tf.Tensor, image_size: int, crop_padding: int = 32,
               crop_fraction: float | None = None) -> tf.Tensor:
  """Decoded uint8 (H, W, 3) -> float32 (S, S, 3) on 0..255: center crop, bicubic resize."""
  shape = tf.shape(image)
  top, left, side = center_crop_window(shape[0], shape[1], image_size, crop_padding,
                                       crop_fraction)
  return resize_bicubic(tf.image.crop_to_bounding_box(image, top, left, side, side), image_size)


def eval_image_from_bytes(image_bytes: tf.Tensor, image_size: int, crop_padding: int = 32,
                          crop_fraction: float | None = None) -> tf.Tensor:
  """Encoded image -> float32 (S, S, 3): the official `preprocess_for_eval`.

  JPEGs are decoded with `decode_and_crop_jpeg` on the crop window, as the official code does:
  its pixels differ from decoding everything and then cropping (chroma upsampling at the
  window's edges), by up to ~10 levels on real photographs. Other formats decode, then crop.
  """
  def jpeg():
    shape = tf.image.extract_jpeg_shape(image_bytes)
    top, left, side = center_crop_window(shape[0], shape[1], image_size, crop_padding,
                                         crop_fraction)
    window = tf.stack([top, left, side, side])
    return resize_bicubic(tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
                          image_size)

  def other():
    return eval_image(decode_rgb(image_bytes), image_size, crop_padding, crop_fraction)

  return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def resize(image: tf.Tensor, image_size: int, method: str = 'bicubic') -> tf.Tensor:
  """'bicubic': TF1's (official TF1 code); 'bilinear': TF2's half-pixel bilinear (TF2 code)."""
  if method == 'bicubic':
    return resize_bicubic(image, image_size)
  if method == 'bilinear':
    return tf.image.resize(image, [image_size, image_size], method='bilinear')
  raise ValueError(f'data.resize_method={method!r}: use one of {RESIZE_METHODS}')


def inception_crop_window(image_shape: tf.Tensor, seed: tf.Tensor, image_size: int,
                          crop_padding: int = 32) -> tf.Tensor:
  """[top, left, height, width] of the official random crop for an image of `image_shape`.

  sample_distorted_bounding_box returns the whole image when none of its attempts fits; the
  official code treats any whole-image result that way and takes the eval center crop.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=seed, min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  height, width = image_shape[0], image_shape[1]
  whole = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
  top, left, side = center_crop_window(height, width, image_size, crop_padding)
  return tf.where(whole, tf.stack([top, left, side, side]),
                  tf.stack([begin[0], begin[1], size[0], size[1]]))


def decode_crop(image_bytes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """The `window` ([top, left, height, width]) of an encoded image as uint8 (h, w, 3).

  JPEGs decode only the window (`decode_and_crop_jpeg`, the official code's fused op: a
  fraction of the work for small crops); other formats decode whole, then crop.
  """
  return tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
      lambda: tf.image.crop_to_bounding_box(decode_rgb(image_bytes), window[0], window[1],
                                            window[2], window[3]))


def image_shape(image_bytes: tf.Tensor) -> tf.Tensor:
  """(H, W, 3) of an encoded image; JPEG headers are read without decoding."""
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.image.extract_jpeg_shape(image_bytes),
                 lambda: tf.shape(decode_rgb(image_bytes), out_type=tf.int32))


def augment(image: tf.Tensor, seed: tf.Tensor, randaugment_layers: int = 0,
            randaugment_magnitude: float = 10, contrast_mean: str = 'official') -> tf.Tensor:
  """Resized float image -> flipped, RandAugmented image (uint8 with RandAugment, as official;
  float 0..255 without it, where TF1 also keeps the bicubic overshoot)."""
  flip_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if randaugment_layers:
    image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
    image = randaugment.distort(image, randaugment_layers, randaugment_magnitude, ra_seed,
                                contrast_mean=contrast_mean)
  return image


def train_image(image: tf.Tensor, image_size: int, seed: tf.Tensor,
                randaugment_layers: int = 0, randaugment_magnitude: float = 10,
                resize_method: str = 'bicubic', crop_padding: int = 32,
                contrast_mean: str = 'official') -> tf.Tensor:
  """The official `preprocess_for_train` (then RandAugment) -> (S, S, 3).

  `image` is encoded bytes (tf.string; JPEGs decode only the crop) or an already decoded
  uint8 (H, W, 3) image (the decoded-image cache).
  """
  crop_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if image.dtype == tf.string:
    window = inception_crop_window(image_shape(image), crop_seed, image_size, crop_padding)
    image = decode_crop(image, window)
  else:
    window = inception_crop_window(tf.shape(image), crop_seed, image_size, crop_padding)
    image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
  return augment(resize(image, image_size, resize_method), augment_seed, randaugment_layers,
                 randaugment_magnitude, contrast_mean)
