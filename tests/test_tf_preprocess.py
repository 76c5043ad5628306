"""The official evaluation preprocessing against TF1's own ops on real photographs."""
import numpy as np
import pytest
import tensorflow as tf

from rs.data import tf_preprocess

skimage_data = pytest.importorskip('skimage.data')

PHOTOS = ['astronaut', 'coffee', 'chelsea', 'rocket', 'camera']  # camera is grayscale


def official_tf1_eval(jpeg: bytes, image_size: int, crop_padding: int = 32):
  """tensorflow/tpu resnet_preprocessing `preprocess_for_eval`, written out with its ops:
  decode_and_crop_jpeg on the S/(S+32) center window, then TF1 resize_bicubic."""
  shape = tf.image.extract_jpeg_shape(jpeg)
  h, w = shape[0], shape[1]
  side = tf.cast((image_size / (image_size + crop_padding)) *
                 tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  window = tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  return tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]


def photo_uint8(photo):
  image = getattr(skimage_data, photo)()
  return image[..., None] if image.ndim == 2 else image


@pytest.mark.parametrize('photo', PHOTOS)
@pytest.mark.parametrize('image_size', [160, 224])
def test_eval_preprocessing_matches_tf1_on_jpeg_photographs(photo, image_size):
  jpeg = tf.io.encode_jpeg(photo_uint8(photo), quality=95).numpy()
  want = official_tf1_eval(jpeg, image_size)
  got = tf_preprocess.eval_image_from_bytes(jpeg, image_size)
  assert got.shape == (image_size, image_size, 3) and got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3)


def test_non_jpeg_images_are_decoded_then_cropped():
  image = photo_uint8('coffee')
  png = tf.io.encode_png(image).numpy()
  h, w = image.shape[:2]
  side = int(224 / 256 * min(h, w))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  want = tf.compat.v1.image.resize_bicubic([image[top:top + side, left:left + side]], [224, 224])[0]
  got = tf_preprocess.eval_image_from_bytes(png, 224)
  np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3)


@pytest.mark.parametrize('height,width,size,padding,fraction,want', [
    (512, 512, 160, 32, None, (43, 43, 426)),  # int(160/192 * 512) = 426, (512-426+1)//2
    (300, 451, 320, 32, None, (14, 90, 272)),  # int(320/352 * 300) = 272, (451-272+1)//2
    (512, 512, 224, 32, 0.875, (32, 32, 448)),  # the fixed fraction wins over the padding
])
def test_center_crop_window_is_the_official_formula(height, width, size, padding, fraction,
                                                    want):
  got = tf_preprocess.center_crop_window(tf.constant(height), tf.constant(width), size, padding,
                                         fraction)
  assert tuple(int(v) for v in got) == want


def test_resize_is_tf1_bicubic_not_half_pixel():
  """TF1's resize_bicubic samples at i * in/out (no half-pixel shift): a ramp shows it."""
  ramp = tf.cast(tf.tile(tf.range(8)[None, :, None], [8, 1, 3]), tf.uint8) * 10
  out = tf_preprocess.eval_image(ramp, 4, crop_padding=0)  # 8x8 crop, resized to 4x4
  np.testing.assert_allclose(out[0, :, 0].numpy(), [0, 20, 40, 60], atol=1e-4)
