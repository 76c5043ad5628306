"""Videos on the host: decoding video files (for class folders of videos) and writing them (for
data sets rs makes, e.g. moving Fashion-MNIST), with PyAV; and frame packs, the one-string form
of a video stored as encoded frame images (a folder of frames, a tfds `Video` feature).

PyAV is the chosen decoder: its wheels carry FFmpeg's libraries, so `pip install` is all a TPU
VM or a laptop needs (no system ffmpeg, unlike tfds's video builders, which run the ffmpeg
binary), it decodes every container and codec FFmpeg does (mp4/H.264, webm/VP9, mkv, avi), and
it releases the GIL while decoding, so tf.data's parallel calls decode videos side by side.
"""
import io

import numpy as np
import tensorflow as tf

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v')
# A frame pack is tf.io.serialize_tensor of a 1-D string tensor, one encoded image per frame:
# its TensorProto starts with dtype DT_STRING (field 1 = 7), then the shape (field 2).
PACK_SIGNATURE = b'\x08\x07\x12'


class VideoError(ValueError):
  """A file that does not decode as a video with at least one frame."""


def is_pack(data: tf.Tensor) -> tf.Tensor:
  """In graph: whether bytes are a frame pack (else a video file, or not a video)."""
  return tf.equal(tf.strings.substr(data, 0, len(PACK_SIGNATURE)), PACK_SIGNATURE)


def pack(frames) -> bytes:
  """A frame pack of encoded frame images (bytes each), in order."""
  return tf.make_tensor_proto(np.array(list(frames), dtype=object)).SerializeToString()


def unpack(data: bytes) -> list[bytes]:
  """The encoded frames of a frame pack."""
  return list(tf.io.parse_tensor(data, tf.string).numpy())


def well_formed(data: tf.Tensor, otherwise=None) -> tf.Tensor:
  """In graph, a few string ops: whether bytes start like a video container - Matroska/WebM
  (EBML), MP4/MOV ('ftyp' box) or AVI (RIFF ... 'AVI ') - or a frame pack; for bytes that do
  not, `otherwise()` when given (a whole decode). Empty and non-video files are caught here,
  before records are numbered, so they shift nothing in the stream (rs.data.streaming)."""
  head = lambda start, size: tf.strings.substr(data, start, size)
  known = tf.reduce_any(tf.stack([
      tf.equal(head(0, 4), b'\x1a\x45\xdf\xa3'), tf.equal(head(4, 4), b'ftyp'),
      tf.logical_and(tf.equal(head(0, 4), b'RIFF'), tf.equal(head(8, 4), b'AVI ')),
      is_pack(data)]))
  if otherwise is None:
    return known
  return tf.cond(known, lambda: tf.constant(True), otherwise)


def decode(data: bytes, path: str = 'video') -> np.ndarray:
  """uint8 RGB frames [L, H, W, 3] of an encoded video file's bytes (its first video stream)
  or of a frame pack. VideoError names `path` when nothing decodes."""
  if data.startswith(PACK_SIGNATURE):
    return decode_pack(data, path)
  import av
  try:
    with av.open(io.BytesIO(data), mode='r') as container:
      if not container.streams.video:
        raise VideoError(f'{path}: no video stream')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      frames = [frame.to_ndarray(format='rgb24') for frame in container.decode(stream)]
  except VideoError:
    raise
  except Exception as e:  # av.error.* and anything a damaged container raises
    raise VideoError(f'{path}: does not decode as a video ({type(e).__name__}: '
                     f'{str(e).strip()[:120]})') from None
  if not frames:
    raise VideoError(f'{path}: no frames')
  return np.stack(frames)


def decode_frame(data: tf.Tensor) -> tf.Tensor:
  """In graph: one encoded frame image (JPEG, PNG, BMP, GIF's first frame) as uint8 RGB."""
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def decode_pack(data: bytes, path: str = 'video') -> np.ndarray:
  """uint8 RGB frames [L, H, W, 3] of a frame pack, every frame decoded (the graph decodes
  only the frames a clip samples: this is for messages and tools)."""
  try:
    encoded = unpack(data)
  except tf.errors.OpError:
    raise VideoError(f'{path}: not a readable frame pack') from None
  if not encoded:
    raise VideoError(f'{path}: no frames')
  frames = []
  for i, image in enumerate(encoded):
    try:
      frame = decode_frame(image).numpy()
    except tf.errors.OpError as e:
      raise VideoError(f'{path}: frame {i} does not decode ({e.message[:120]})') from None
    if frames and frame.shape != frames[0].shape:
      raise VideoError(f'{path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 '
                       f'{frames[0].shape[1]}x{frames[0].shape[0]}: a video\'s frames share '
                       'one size')
    frames.append(frame)
  return np.stack(frames)


def encode(frames: np.ndarray, lossless: bool = True, fps: int = 25) -> bytes:
  """The bytes of a video file holding uint8 frames [T, H, W, C] (C = 1 or 3): Matroska with
  FFV1 (lossless: decode() returns the frames exactly, as RGB) or MP4 with H.264 (yuv420p,
  lossy, even sizes only)."""
  import av
  frames = np.asarray(frames, np.uint8)
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or not len(frames):
    raise ValueError(f'frames of shape {frames.shape}: give [T, H, W, 1 or 3] with T >= 1')
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  buffer = io.BytesIO()
  with av.open(buffer, mode='w', format='matroska' if lossless else 'mp4') as container:
    stream = container.add_stream('ffv1' if lossless else 'libx264', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'bgr0' if lossless else 'yuv420p'
    for image in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(stream.encode())  # flush
  return buffer.getvalue()
