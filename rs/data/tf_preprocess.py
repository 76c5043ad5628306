"""TensorFlow (tf.data) preprocessing of ImageNet-style images, as the official TF1 code does it.

Evaluation (facts sheet 4.2): a center crop of side min(H, W) * S / (S + crop_padding),
offset ((H - side + 1) // 2, (W - side + 1) // 2), then TF1's bicubic resize
(`tf.compat.v1.image.resize_bicubic`: no half-pixel centers) to S x S. The release-time rule is
crop_padding=32 (so the kept fraction grows with S: 0.833 at 160, 0.909 at 320); the official
code later switched to a fixed fraction of 0.875, available as `crop_fraction=0.875`.
Images stay float on the 0..255 scale; rs.step.normalize applies the mean/std on device.
"""
import tensorflow as tf


def center_crop_window(height, width, image_size: int, crop_padding: int = 32,
                       crop_fraction: float | None = None):
  """(offset_h, offset_w, side) of the official center crop, as int32 tensors."""
  fraction = (crop_fraction if crop_fraction is not None
              else image_size / (image_size + crop_padding))
  side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  return (height - side + 1) // 2, (width - side + 1) // 2, side


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
