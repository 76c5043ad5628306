"""Clips from videos, as tensorflow/models' video input samples them (the 3D ResNet-RS recipe;
facts sheet 1.7), in TF ops for tf.data and pure functions of their seeds.

Training: one clip of `num_frames` frames `stride` apart, from a start drawn uniformly in
[0, L - (T - 1) * s) (or [0, L) when the video is shorter); the frame indices wrap around a
video too short for the clip. Then one random crop for every frame (scale jitter) and one flip.
Evaluation: `num_clips` clips whose starts are linspace(0, max(0, L - T * s), K) cast down to
ints; each frame resized so its shorter side is the crop size; `num_crops` crops of that size
along the longer side (start, centre, end), every view scored, probabilities averaged.
"""
import tensorflow as tf


def train_frame_indices(length, num_frames: int, stride: int, seed) -> tf.Tensor:
  """int32 [num_frames]: a random clip's frame indices in a video of `length` frames."""
  length = tf.cast(length, tf.int32)
  span = (num_frames - 1) * stride
  starts = tf.where(length > span, length - span, length)  # how many starts fit
  start = tf.random.stateless_uniform([], seed, 0, tf.maximum(starts, 1), dtype=tf.int32)
  return tf.math.floormod(start + stride * tf.range(num_frames), tf.maximum(length, 1))


def eval_clip_starts(length, num_frames: int, stride: int, num_clips: int) -> tf.Tensor:
  """int32 [num_clips]: the first frame of each evaluation clip, spread evenly."""
  last = tf.maximum(tf.cast(length, tf.float32) - num_frames * stride, 0.0)
  return tf.cast(tf.linspace(0.0, last, num_clips), tf.int32)


def eval_frame_indices(length, num_frames: int, stride: int, num_clips: int) -> tf.Tensor:
  """int32 [num_clips, num_frames], wrapping like training's in a short video."""
  starts = eval_clip_starts(length, num_frames, stride, num_clips)
  indices = starts[:, None] + stride * tf.range(num_frames)[None, :]
  return tf.math.floormod(indices, tf.maximum(tf.cast(length, tf.int32), 1))


def short_side_size(height, width, size: int) -> tf.Tensor:
  """int32 [2]: (height, width) resized so the shorter side is `size`; the longer one is
  max(size, longer * size // shorter), as the reference computes it."""
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  other = tf.maximum(size, long * size // short)
  return tf.where(height <= width, tf.stack([size, other]), tf.stack([other, size]))


def crop_offsets(long_side, size: int, num_crops: int) -> tf.Tensor:
  """int32 [num_crops]: where each crop of `size` starts along the longer side: the start,
  the centre and the end for 3 crops (evenly from start to end for any other count)."""
  room = tf.cast(tf.maximum(tf.cast(long_side, tf.int32) - size, 0), tf.float32)
  if num_crops == 1:
    return tf.cast(room // 2, tf.int32)[None]
  return tf.cast(tf.round(tf.linspace(0.0, room, num_crops)), tf.int32)


def eval_views(frames: tf.Tensor, size: int, num_crops: int) -> tf.Tensor:
  """uint8 frames [T, H, W, C] -> [num_crops, T, size, size, C]: resized (bilinear) so the
  shorter side is `size`, then `num_crops` square crops along the longer side."""
  shape = tf.shape(frames)
  hw = short_side_size(shape[1], shape[2], size)
  resized = tf.cast(tf.round(tf.clip_by_value(
      tf.image.resize(frames, hw, method='bilinear'), 0, 255)), tf.uint8)
  offsets = crop_offsets(tf.reduce_max(hw), size, num_crops)
  tall = hw[0] > hw[1]
  views = []
  for i in range(num_crops):
    top = tf.where(tall, offsets[i], 0)
    left = tf.where(tall, 0, offsets[i])
    views.append(resized[:, top:top + size, left:left + size, :])
  return tf.stack(views)


def train_clip(frames: tf.Tensor, size: int, seed, area=(0.08, 1.0),
               aspect_ratio=(0.5, 2.0), flip: bool = True) -> tf.Tensor:
  """uint8 frames [T, H, W, C] -> [T, size, size, C]: one random-resized crop box for every
  frame (sample_distorted_bounding_box, min object covered 0.1, 100 attempts: the reference's
  scale jitter), bilinear resize, one horizontal flip with probability 1/2 (unless `flip` is
  off: where left and right carry the class, e.g. the direction of a motion)."""
  box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.shape(frames)
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape[1:], tf.zeros([0, 0, 4], tf.float32), seed=box_seed, min_object_covered=0.1,
      aspect_ratio_range=aspect_ratio, area_range=area, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(frames, [0, begin[0], begin[1], 0], [-1, box_size[0], box_size[1], -1])
  clip = tf.image.resize(crop, [size, size], method='bilinear')
  clip = tf.cast(tf.round(tf.clip_by_value(clip, 0, 255)), tf.uint8)
  if not flip:
    return clip
  flipped = tf.random.stateless_uniform([], flip_seed) < 0.5
  return tf.where(flipped, tf.reverse(clip, axis=[2]), clip)


def eval_clip_views(frames_at, num_frames: int, stride: int, num_clips: int, size: int,
                    num_crops: int) -> tf.Tensor:
  """A video's evaluation input, uint8 [num_clips * num_crops, T, size, size, C] (clip-major):
  `frames_at(indices_of)` gives the frames at `indices_of(length)` of the video (the pipeline
  decodes only those; rs.predict has them all)."""
  clips = frames_at(lambda length: eval_frame_indices(length, num_frames, stride, num_clips))
  return tf.concat([eval_views(clips[k], size, num_crops) for k in range(num_clips)], axis=0)
