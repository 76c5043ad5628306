"""Streaming clips from video files: the image pipeline (rs.data.streaming) with a video's
decoding and sampling in place of an image's.

Everything that makes the image pipeline exact carries over unchanged: the record order from
(seed, epoch), each example's randomness from (seed, its position in the global stream), host
shards, resume by skipping encoded records, evaluation padded and masked so every video counts
once, undecodable files left out, named and counted (data.bad_images). What differs:
- a record is a whole video: a video file (ROOT/SPLIT/CLASS/*.mp4|mkv|webm|avi|mov|m4v),
  decoded whole on the host by PyAV (rs.data.video_files) in tf.data's parallel map, or a
  frame pack (a folder of frame images, or a tfds `Video` feature: one encoded image per
  frame), of which only the frames a clip samples are decoded, each once;
- training: one clip of `frames` frames `frame_stride` apart, one crop box and flip for all of
  them (rs.data.video; data.flip=False where left and right carry the class);
- evaluation: `eval_clips` clips x `eval_crops` crops of side `eval_image_size` per video,
  shaped (views, T, S, S, 3);
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

from rs.data import bad_images, records, streaming, video, video_files


@dataclasses.dataclass
class VideoPipeline(streaming.StreamingPipeline):
  frames: int = 32
  frame_stride: int = 2
  eval_clips: int = 10
  eval_crops: int = 3
  min_video_frames: int = 1
  eval_image_size: int | None = None  # the eval crops' side; None: image_size
  flip: bool = True  # training clips flipped left-right half the time

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
  def eval_size(self) -> int:
    return self.eval_image_size or self.image_size

  @property
  def eval_image_shape(self) -> tuple[int, ...]:
    return (self.eval_clips * self.eval_crops, self.frames, self.eval_size, self.eval_size, 3)

  def _decode(self, data: bytes) -> np.ndarray:
    if data == bad_images.END['image']:  # the stream's end marker (label -1): one gray frame
      return np.full((1, 8, 8, 3), 128, np.uint8)
    frames = video_files.decode(data)
    if len(frames) < self.min_video_frames:
      raise video_files.VideoError(f'{len(frames)} frames, fewer than data.min_video_frames='
                                   f'{self.min_video_frames}')
    return frames

  def _frames_at(self, encoded: tf.Tensor, indices_of) -> tf.Tensor:
    """uint8 frames [*indices.shape, H, W, 3] at `indices_of(length)` (int32 frame indices
    of any shape) of a video record. A frame pack decodes only those frames, each once; a
    video file decodes whole (PyAV). A bad video fails the map (ignore_errors drops it)."""
    def from_pack():
      strings = tf.io.parse_tensor(encoded, tf.string)
      length = tf.size(strings)
      with tf.control_dependencies([tf.debugging.assert_greater_equal(
          length, self.min_video_frames, message='too few frames')]):
        indices = indices_of(length)
      unique, where = tf.unique(tf.reshape(indices, [-1]))
      frames = tf.map_fn(video_files.decode_frame, tf.gather(strings, unique),
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
      return tf.gather(frames, tf.reshape(where, tf.shape(indices)))

    def from_file():
      frames = tf.numpy_function(self._decode, [encoded], tf.uint8, stateful=False)
      frames = tf.ensure_shape(frames, [None, None, None, 3])
      return tf.gather(frames, indices_of(tf.shape(frames)[0]))

    return tf.cond(video_files.is_pack(encoded), from_pack, from_file)

  def _decode_error(self, data: bytes) -> str | None:
    """Why the bytes are no usable video (BadImages' verdict on a file), or None."""
    try:
      self._decode(data)
    except video_files.VideoError as e:
      return str(e).removeprefix('video: ')  # decode()'s default name: the caller has the path
    return None

  def _why_undecodable(self, path: str) -> str:
    try:
      why = self._decode_error(records.read_video(path))
    except OSError as e:
      return f'failed to decode; then unreadable ({e})'
    return why or 'failed to decode as it was read (decodes now)'

  def _train_image(self, encoded, seed):
    index_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    frames = self._frames_at(encoded, lambda length: video.train_frame_indices(
        length, self.frames, self.frame_stride, index_seed))
    return video.train_clip(frames, self.image_size, crop_seed, flip=self.flip)

  def _eval_example(self, encoded: tf.Tensor) -> tf.Tensor:
    views = video.eval_clip_views(lambda indices_of: self._frames_at(encoded, indices_of),
                                  self.frames, self.frame_stride, self.eval_clips,
                                  self.eval_size, self.eval_crops)
    return tf.ensure_shape(views, self.eval_image_shape)


def open_source(name: str, data_dir: str | None, manual_dir: str | None = None,
                train_split: str = 'train', prepare: bool = False, class_names=None):
  """The videos of dataset `name`: class folders of videos under `data_dir` ('folder'; classes
  numbered as `class_names` lists them, else by the folders of `train_split`) or a prepared
  tfds dataset with a `Video` feature."""
  if name == 'folder':
    if not data_dir:
      raise ValueError('data.name=folder needs --config.data.data_dir=ROOT (ROOT/SPLIT/CLASS/ '
                       'video files or folders of frames)')
    return records.VideoFolderRecords(data_dir, train_split.split('[')[0], class_names)
  source = records.TfdsRecords(name, data_dir, manual_dir, prepare)
  if not source.video:
    raise ValueError(f'data.name={name!r} holds images ({source.image_key!r}), not videos, '
                     'while data.frames is set: give a tfds dataset with a Video feature '
                     '(e.g. ucf101) or class folders of videos (data.name=folder), or unset '
                     'data.frames to train on images')
  return source


def create(config, prepare: bool = False) -> VideoPipeline:
  """The video pipeline of a config whose data.frames is set: class folders of videos
  (data.name='folder', data.data_dir=ROOT with ROOT/SPLIT/CLASS/ video files or frame
  folders) or a prepared tfds dataset with a `Video` feature (e.g. ucf101)."""
  d = config.data
  source = open_source(d.name, d.data_dir, d.manual_dir, d.train_split, prepare)
  return VideoPipeline(
      source, d.train_split, d.eval_split, d.image_size, config.batch_size,
      config.eval_batch_size, config.seed, shuffle_buffer=d.shuffle_buffer,
      prefetch=d.prefetch_batches, threads=d.threads, bad_images=d.get('bad_images', 'skip'),
      frames=d.frames, frame_stride=d.frame_stride, eval_clips=d.eval_clips,
      eval_crops=d.eval_crops, min_video_frames=d.min_video_frames,
      eval_image_size=d.get('eval_image_size'), flip=d.get('flip', True))


def for_evaluation(name: str, split: str, spec, batch_size: int, data_dir: str | None = None,
                   manual_dir: str | None = None, train_split: str = 'train',
                   bad_images: str = 'skip', class_names=None) -> VideoPipeline:
  """Evaluation batches of `split`'s videos, viewed as `spec` (a video network's model.json
  input: method 'clips') says (rs.evaluate)."""
  source = open_source(name, data_dir, manual_dir, train_split, class_names=class_names)
  return VideoPipeline(source, split, split, spec.image_size, batch_size, batch_size,
                       bad_images=bad_images, frames=spec.frames,
                       frame_stride=spec.frame_stride, eval_clips=spec.clips,
                       eval_crops=spec.crops)
