"""Image preprocessing on the host, in numpy: resizing and the flip/crop augmentation.

Normalisation happens on the device (rs.step.normalize), so batches travel as uint8.
"""
import numpy as np


def resize(images: np.ndarray, size: int, chunk: int = 8192) -> np.ndarray:
  """uint8 (N, H, W, C) -> uint8 (N, size, size, C), bilinear with antialiasing; no-op if equal."""
  if images.shape[1:3] == (size, size):
    return images
  import tensorflow as tf
  out = [np.asarray(tf.clip_by_value(tf.round(tf.image.resize(
      images[i:i + chunk], (size, size), method='bilinear', antialias=True)), 0, 255))
         for i in range(0, len(images), chunk)]
  return np.concatenate(out).astype(np.uint8)


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
