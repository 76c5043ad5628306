"""How an image becomes a network's evaluation input: one description, used by the eval
pipelines, by rs.predict on image files, and stored with every set of weights (rs.weights).

Three methods, as the pipelines evaluate:
- 'center_crop' (streamed datasets: ImageNet, tfds and class folders; timm imports): the
  official eval crop S / (S + crop_padding) of the shorter side (or a fixed crop_fraction),
  decoded straight from the JPEG, then TF1's bicubic resize to S x S
  (rs.data.tf_preprocess.eval_image_from_bytes).
- 'resize' (in-memory datasets: Fashion-MNIST): the whole image resized to S x S
  (rs.data.preprocess.resize). A file of another size than the dataset's own (`native_size`,
  28 for Fashion-MNIST) is first centered on a black square and resized to that size, as
  Fashion-MNIST built its images from product photos.
- 'clips' (video: rs.data.video_pipeline): a video file or a folder of frames, decoded, then
  `clips` clips of `frames` frames `frame_stride` apart, each frame's shorter side resized to S
  and `crops` S x S crops: (clips x crops, frames, S, S, C) views, whose probabilities the
  network's forward averages (rs.step.logits).
The pixels are then normalised on the device with `mean` and `std` (0..255 scale, per channel).
"""
import dataclasses

import numpy as np
from etils import epath

from rs.errors import one_line

METHODS = ('center_crop', 'resize', 'clips')


class ImageError(ValueError):
  """One image cannot be read or decoded; the message says why."""


@dataclasses.dataclass(frozen=True)
class EvalInput:
  image_size: int
  channels: int
  mean: tuple[float, ...]  # per channel, on the 0..255 scale
  std: tuple[float, ...]
  method: str = 'center_crop'
  crop_padding: int = 32
  crop_fraction: float | None = None
  native_size: int | None = None  # 'resize': the side of the dataset's own images
  frames: int | None = None  # 'clips': frames per clip, frame_stride apart
  frame_stride: int = 1
  clips: int = 1
  crops: int = 1

  VIDEO_FIELDS = ('frames', 'frame_stride', 'clips', 'crops')

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'eval input method {self.method!r}: use one of {METHODS}')
    if len(self.mean) != self.channels or len(self.std) != self.channels:
      raise ValueError(f'mean {list(self.mean)} and std {list(self.std)} need one value per '
                       f'channel ({self.channels})')

  @classmethod
  def from_config(cls, config, channels: int, native_size: int | None = None) -> 'EvalInput':
    """What a training config's evaluation does (data.augment 'pad_crop' holds the dataset in
    memory and resizes; 'inception_crop' streams and center-crops)."""
    d = config.data
    if d.get('frames'):
      return cls(image_size=int(d.get('eval_image_size') or d.image_size),
                 channels=int(channels), mean=tuple(float(x) for x in d.mean),
                 std=tuple(float(x) for x in d.std), method='clips', frames=int(d.frames),
                 frame_stride=int(d.frame_stride), clips=int(d.eval_clips),
                 crops=int(d.eval_crops))
    return cls(image_size=int(d.image_size), channels=int(channels),
               mean=tuple(float(x) for x in d.mean), std=tuple(float(x) for x in d.std),
               method='center_crop' if d.augment == 'inception_crop' else 'resize',
               crop_padding=int(d.get('eval_crop_padding', 32)),
               crop_fraction=d.get('eval_crop_fraction'),
               native_size=native_size)

  @property
  def shape(self) -> tuple[int, ...]:
    """One example's input: (S, S, C), or a video's views (clips x crops, T, S, S, C)."""
    image = (self.image_size, self.image_size, self.channels)
    return (self.clips * self.crops, self.frames, *image) if self.method == 'clips' else image

  def to_json(self) -> dict:
    values = {**dataclasses.asdict(self), 'mean': list(self.mean), 'std': list(self.std)}
    if self.method != 'clips':  # image inputs keep the fields they always had
      values = {k: v for k, v in values.items() if k not in self.VIDEO_FIELDS}
    return values

  @classmethod
  def from_json(cls, values: dict) -> 'EvalInput':
    return cls(**{**values, 'mean': tuple(values['mean']), 'std': tuple(values['std'])})

  # Image files (rs.predict, the pseudo-labelling teacher).

  def __call__(self, image_bytes: bytes) -> np.ndarray:
    """Encoded image -> float32 (S, S, channels) on 0..255 (a video: its views, `shape`);
    ImageError for undecodable bytes."""
    import tensorflow as tf
    from rs.data import tf_preprocess
    if self.method == 'clips':
      return self._views(image_bytes)
    # A JPEG decoder may stop at a crop window before a truncation: look at the whole file.
    if not tf_preprocess.well_formed(tf.constant(image_bytes)):
      error = tf_preprocess.decode_error(image_bytes)
      if error:
        raise ImageError(error)
    try:
      if self.method == 'resize':
        return self._resized(self._decode(image_bytes))
      image = tf_preprocess.eval_image_from_bytes(
          tf.constant(image_bytes), self.image_size, self.crop_padding, self.crop_fraction)
      return (tf_preprocess.grayscale(image) if self.channels == 1 else image).numpy()
    except tf.errors.OpError as e:
      why = tf_preprocess.decode_error(image_bytes) or one_line(e.message, limit=None)
      raise ImageError(why) from None

  def read(self, path: str) -> np.ndarray:
    """The image file at `path` (for 'clips': a video file or a folder of frames) as the
    network's input; ImageError (naming why) when unusable."""
    try:
      if self.method == 'clips':
        from rs.data import records
        image_bytes = records.read_video(path)
      else:
        image_bytes = epath.Path(path).read_bytes()
    except OSError as e:
      raise ImageError(e.strerror or one_line(e, limit=None)) from None
    if not image_bytes:
      raise ImageError('empty file')
    return self(image_bytes)

  def _views(self, video_bytes: bytes) -> np.ndarray:
    import tensorflow as tf
    from rs.data import video, video_files
    try:
      frames = tf.constant(video_files.decode(video_bytes, path='the video'))
    except video_files.VideoError as e:
      raise ImageError(str(e).removeprefix('the video: ')) from None
    views = video.eval_clip_views(lambda indices_of: tf.gather(frames, indices_of(len(frames))),
                                  self.frames, self.frame_stride, self.clips, self.image_size,
                                  self.crops)
    return views.numpy().astype(np.float32)

  def _decode(self, image_bytes: bytes) -> np.ndarray:
    """uint8 (H, W, channels), whatever the file holds: alpha dropped, color made gray by
    luma weights (rs.data.tf_preprocess.grayscale: exact on gray pixels), gray repeated for a color model."""
    import tensorflow as tf
    from rs.data import tf_preprocess
    # The file's own channels: TF's GIF and BMP decoders give no grayscale.
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    image = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    if self.channels == 1 and image.shape[-1] == 3:
      image = tf_preprocess.grayscale(image)
    return np.repeat(image.numpy(), self.channels // image.shape[-1], axis=-1)

  def _resized(self, image: np.ndarray) -> np.ndarray:
    from rs.data import preprocess
    height, width = image.shape[:2]
    if self.native_size and (height, width) != (self.native_size,) * 2:
      side = max(height, width)
      top, left = (side - height) // 2, (side - width) // 2
      image = np.pad(image, ((top, side - height - top), (left, side - width - left), (0, 0)))
      image = preprocess.resize(image[None], self.native_size)[0]
    return preprocess.resize(image[None], self.image_size)[0].astype(np.float32)
