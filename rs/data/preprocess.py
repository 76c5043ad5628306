"""Image preprocessing on the host, in numpy: resizing and the flip/crop augmentation.

Normalisation happens on the device (rs.step.normalize), so batches travel as uint8.
"""
import numpy as np


def resize(images: np.ndarray, size: int, chunk_bytes: int = 2**28) -> np.ndarray:
  """uint8 (N, H, W, C) -> uint8 (N, size, size, C), bilinear with antialiasing; no-op if equal.
  Resized in chunks of about `chunk_bytes` of float32 output, so the temporaries stay small."""
  if images.shape[1:3] == (size, size):
    return images
  import tensorflow as tf
  chunk = max(1, chunk_bytes // (4 * size * size * images.shape[-1]))
  # Each chunk back to uint8 at once: a float32 copy of all of them is 4x the result.
  out = [np.asarray(tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
      images[i:i + chunk], (size, size), method='bilinear', antialias=True)), 0, 255), tf.uint8))
         for i in range(0, len(images), chunk)]
  return np.concatenate(out)


# ITU-R 601 luma (TF's rgb_to_grayscale weights) scaled to sum to 1, so a gray pixel stays
# itself; rs.data.tf_preprocess.grayscale uses the same, so held and streamed images agree.
GRAY_WEIGHTS = tuple(w / 0.9999 for w in (0.2989, 0.5870, 0.1140))


def with_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
  """uint8 (N, H, W, C) with `channels` channels (None: as they are): gray repeated to RGB,
  RGB to gray by GRAY_WEIGHTS, rounded (as rs.data.tf_preprocess.grayscale: a gray pixel
  stays itself)."""
  have = images.shape[-1]
  if channels is None or channels == have:
    return images
  if have == 1:
    return np.repeat(images, channels, axis=-1)
  if have == 3 and channels == 1:
    gray = images.astype(np.float32) @ np.float32(GRAY_WEIGHTS)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
  raise ValueError(f'data.channels={channels}: images with {have} channels give 1 or 3')


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
  """Random `pad`-pixel translation (zero fill) and random horizontal flip, per example."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, n)
  dx = rng.integers(0, 2 * pad + 1, n)
  flip = rng.random(n) < 0.5
  rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
  cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
