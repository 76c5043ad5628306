"""Images that do not decode, in the streamed pipeline: who saw them, why, and what to do.

rs.data.streaming screens records with `BadImages.check` (a byte test in the graph, a Python
decode for doubtful files only), finds the files that slipped past it from gaps in the record
indices of each batch (`Gaps`), and ends each screened stream with `END`, a record that always
decodes. data.bad_images='skip' logs each bad file once and counts it; 'stop' raises
UndecodableImageError naming it. docs/data.md has what TF does with each kind of bad file.
"""
import logging
import struct
import threading

import numpy as np
import tensorflow as tf
from etils import epath

from rs.data import tf_preprocess
from rs.errors import UserError

BAD_IMAGE_MODES = ('skip', 'stop')  # data.bad_images


class UndecodableImageError(UserError, ValueError):
  """An image that does not decode (data.bad_images='stop'), or too few that do."""


class BadImages:
  """The undecodable images a pipeline met: each logged once with its path, and counted.

  Python sees bad or doubtful files only (from tf.py_function, or when a batch shows a gap):
  good images never reach it. In 'stop' mode the first bad file becomes `stop_error`, which
  the pipeline's iterators raise.
  """

  def __init__(self, mode: str = 'skip', well_formed=None, decode_error=None,
               kind: str = 'image'):
    """`well_formed(bytes, otherwise)` (graph) and `decode_error(bytes) -> str | None`
    (Python) judge the files: an image's by default (rs.data.tf_preprocess); a video
    pipeline passes rs.data.video_files's, and `kind`='video' for its messages."""
    if mode not in BAD_IMAGE_MODES:
      raise ValueError(f'data.bad_images={mode!r}: use one of {BAD_IMAGE_MODES}')
    self.mode = mode
    self.kind = kind
    self._well_formed = well_formed or tf_preprocess.well_formed
    self._decode_error = decode_error or tf_preprocess.decode_error
    self.paths: dict[str, str] = {}  # path -> why it failed, in the order met
    self.unnamed = 0  # tfds records that failed to decode (their order is not known)
    self.stop_error: UndecodableImageError | None = None
    self._verdicts: dict[str, str | None] = {}  # decode_error of each doubted file, once
    self._lock = threading.Lock()

  @property
  def count(self) -> int:
    return len(self.paths) + self.unnamed

  def check(self, image_bytes: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """In graph: whether to keep a record. The byte test; for the files it doubts (bad ones,
    and valid ones with bytes after their end), a whole decode in Python, once per file."""
    doubt = lambda: tf.reshape(tf.py_function(self._decodes, [image_bytes, path], tf.bool), [])
    return self._well_formed(image_bytes, otherwise=doubt)

  def _decodes(self, image_bytes: tf.Tensor, path: tf.Tensor) -> bool:
    path = path.numpy().decode(errors='replace')
    if path not in self._verdicts:
      self._verdicts[path] = self._decode_error(image_bytes.numpy())
    why = self._verdicts[path]
    if why is not None:
      self.add(path, why)
    return why is None

  def screened_out(self, path: str) -> bool:
    """Whether `check` dropped the file (it has done so by the time a later record shows)."""
    return self._verdicts.get(path) is not None

  def add(self, path: str, why: str) -> None:
    with self._lock:
      if path in self.paths:
        return
      self.paths[path] = why
      count = self.count
    if self.mode == 'skip':
      logging.warning('Skipping undecodable %s %s: %s (%d skipped so far).', self.kind, path,
                      why, count)
    elif self.stop_error is None:  # the first: later ones are prefetched, the run is stopping
      logging.error('Undecodable %s %s: %s; stopping (data.bad_images=stop).', self.kind, path,
                    why)
      self.stop(f'undecodable {self.kind} {path}: {why}. Remove or replace the file, or set '
                '--config.data.bad_images=skip to skip such files')

  def add_unnamed(self, split: str, count: int) -> None:
    with self._lock:
      self.unnamed += count
    logging.warning('Skipping %d undecodable records of %s (tfds records: not named).', count,
                    split)
    if self.mode == 'stop':
      self.stop(f'{count} undecodable records in {split} (data.bad_images=stop)')

  def stop(self, message: str) -> UndecodableImageError:
    with self._lock:
      if self.stop_error is None:
        self.stop_error = UndecodableImageError(message)
      return self.stop_error


def why_undecodable(path: str) -> str:
  """TF's reason for a file that failed to decode as it was read."""
  try:
    why = tf_preprocess.decode_error(epath.Path(path).read_bytes())
  except (tf.errors.OpError, OSError) as e:
    return f'failed to decode; then unreadable ({e})'
  return why or 'failed to decode this crop window (decodes whole)'


class Gaps:
  """Follows the record indices in the batches of one screened stream: which are missing."""

  def __init__(self, first: int = 0):
    self.expected = first

  def missing(self, index: np.ndarray) -> np.ndarray:
    if not len(index):
      return index
    gone = np.setdiff1d(np.arange(self.expected, index[-1] + 1), index)
    self.expected = index[-1] + 1
    return gone


def _gray_bmp(side: int = 32) -> bytes:
  """A valid side x side gray BMP (side % 4 == 0: rows need no padding)."""
  pixels = bytes([128]) * (3 * side * side)
  return (struct.pack('<2sIHHI', b'BM', 54 + len(pixels), 0, 0, 54) +
          struct.pack('<IiiHHIIiiII', 40, side, side, 1, 24, 0, len(pixels), 2835, 2835, 0, 0) +
          pixels)


# The end record (label -1) follows a screened stream's records: it decodes under every
# preprocessing, so its index shows any records missing before it, and a training epoch that
# runs out of records fills up with it, where the iterator sees it, instead of waiting forever.
END = {'image': _gray_bmp(), 'label': -1, 'path': '', 'ok': True}
