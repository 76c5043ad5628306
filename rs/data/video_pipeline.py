"""Streaming clips from video files: the image pipeline (rs.data.streaming) with a video's
decoding and sampling in place of an image's.

Everything that makes the image pipeline exact carries over unchanged: the record order from
(seed, epoch), each example's randomness from (seed, its position in the global stream), host
shards, resume by skipping encoded records, evaluation padded and masked so every video counts
once, undecodable files left out, named and counted (data.bad_images). What differs:
- a record is a whole video file (ROOT/SPLIT/CLASS/*.mp4|mkv|webm|avi|mov|m4v), decoded on the
  host by PyAV (rs.data.video_files) in tf.data's parallel map;
- training: one clip of `frames` frames `frame_stride` apart, one crop box and flip for all of
  them (rs.data.video);
- evaluation: `eval_clips` clips x `eval_crops` crops per video, shaped (views, T, S, S, 3);
  rs.step.eval_step averages their probabilities;
- bad files: bytes that do not start like a video container (rs.data.video_files.well_formed)
  are screened out before records are numbered, and shift nothing, as for images; a container
  whose contents fail to decode drops out in the map, moving the rest of its epoch up by one;
- a video with fewer than `min_video_frames` frames counts as undecodable (skipped, counted);
  the default 1 keeps short videos and wraps their frames, as the reference does.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from etils import epath

from rs.data import bad_images, records, streaming, video, video_files


@dataclasses.dataclass
class VideoPipeline(streaming.StreamingPipeline):
  frames: int = 32
  frame_stride: int = 2
  eval_clips: int = 10
  eval_crops: int = 3
  min_video_frames: int = 1

  def __post_init__(self):
    for name in ('frames', 'frame_stride', 'eval_clips', 'eval_crops', 'min_video_frames'):
      if getattr(self, name) < 1:
        raise ValueError(f'data.{name}={getattr(self, name)}: give 1 or more')
    super().__post_init__()
    self.undecodable = bad_images.BadImages(self.bad_images, video_files.well_formed,
                                            self._decode_error, kind='video')

  @property
  def image_shape(self) -> tuple[int, int, int, int]:
    return (self.frames, self.image_size, self.image_size, 3)

  @property
  def eval_image_shape(self) -> tuple[int, ...]:
    return (self.eval_clips * self.eval_crops, *self.image_shape)

  def _decode(self, data: bytes) -> np.ndarray:
    if data == bad_images.END['image']:  # the stream's end marker (label -1): one gray frame
      return np.full((1, 8, 8, 3), 128, np.uint8)
    frames = video_files.decode(data)
    if len(frames) < self.min_video_frames:
      raise video_files.VideoError(f'{len(frames)} frames, fewer than data.min_video_frames='
                                   f'{self.min_video_frames}')
    return frames

  def _decoded(self, encoded: tf.Tensor) -> tf.Tensor:
    """uint8 [L, H, W, 3] in the graph; a bad video fails the map (ignore_errors drops it)."""
    frames = tf.numpy_function(self._decode, [encoded], tf.uint8, stateful=False)
    return tf.ensure_shape(frames, [None, None, None, 3])

  def _decode_error(self, data: bytes) -> str | None:
    """Why the bytes are no usable video (BadImages' verdict on a file), or None."""
    try:
      self._decode(data)
    except video_files.VideoError as e:
      return str(e).removeprefix('video: ')  # decode()'s default name: the caller has the path
    return None

  def _why_undecodable(self, path: str) -> str:
    try:
      why = self._decode_error(epath.Path(path).read_bytes())
    except OSError as e:
      return f'failed to decode; then unreadable ({e})'
    return why or 'failed to decode as it was read (decodes now)'

  def _train_image(self, encoded, seed):
    index_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    frames = self._decoded(encoded)
    indices = video.train_frame_indices(tf.shape(frames)[0], self.frames, self.frame_stride,
                                        index_seed)
    return video.train_clip(tf.gather(frames, indices), self.image_size, crop_seed)

  def _eval_example(self, encoded: tf.Tensor) -> tf.Tensor:
    frames = self._decoded(encoded)
    indices = video.eval_frame_indices(tf.shape(frames)[0], self.frames, self.frame_stride,
                                       self.eval_clips)
    views = [video.eval_views(tf.gather(frames, indices[k]), self.image_size, self.eval_crops)
             for k in range(self.eval_clips)]
    return tf.reshape(tf.concat(views, axis=0), self.eval_image_shape)


def create(config, prepare: bool = False) -> VideoPipeline:
  """The video pipeline of a config whose data.frames is set: class folders of video files
  (data.name='folder', data.data_dir=ROOT)."""
  d = config.data
  if d.name != 'folder':
    raise ValueError(f"data.name={d.name!r} with data.frames set: video comes from class "
                     "folders of video files so far; set --config.data.name=folder and "
                     "--config.data.data_dir=ROOT (ROOT/SPLIT/CLASS/*.mp4)")
  if not d.data_dir:
    raise ValueError('data.name=folder needs --config.data.data_dir=ROOT '
                     '(ROOT/SPLIT/CLASS/video files)')
  del prepare  # class folders need no preparing
  source = records.FolderRecords(d.data_dir, d.train_split.split('[')[0],
                                 extensions=video_files.VIDEO_EXTENSIONS)
  return VideoPipeline(
      source, d.train_split, d.eval_split, d.image_size, config.batch_size,
      config.eval_batch_size, config.seed, shuffle_buffer=d.shuffle_buffer,
      prefetch=d.prefetch_batches, threads=d.threads, bad_images=d.get('bad_images', 'skip'),
      frames=d.frames, frame_stride=d.frame_stride, eval_clips=d.eval_clips,
      eval_crops=d.eval_crops, min_video_frames=d.min_video_frames)
