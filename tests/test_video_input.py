"""Clip sampling and views (rs/data/video.py) against the reference's rules (facts sheet 1.7),
computed here independently with numpy."""
import numpy as np
import pytest
import tensorflow as tf

from rs.data import video


def _seed(i):
  return tf.constant([7, i], tf.int64)


@pytest.mark.parametrize('length', [100, 62, 63, 40, 1])
def test_training_clips_start_uniformly_where_the_clip_fits_and_wrap_in_short_videos(length):
  """T=32, s=2 spans 63 frames: starts in [0, L - 62) when L > 62, else [0, L) with the
  indices wrapping around."""
  starts = set()
  for i in range(400):
    indices = video.train_frame_indices(length, 32, 2, _seed(i)).numpy()
    start = indices[0]
    np.testing.assert_array_equal(indices, (start + 2 * np.arange(32)) % length)
    starts.add(int(start))
  fits = length - 62 if length > 62 else length
  assert starts == set(range(fits))  # every start drawn, none outside (400 draws, <= 40 starts)
  np.testing.assert_array_equal(video.train_frame_indices(length, 32, 2, _seed(3)),
                                video.train_frame_indices(length, 32, 2, _seed(3)))


@pytest.mark.parametrize('length', [300, 250, 64, 50])
def test_evaluation_clips_spread_like_the_reference(length):
  """10 clips of 32 x 2: starts linspace(0, max(0, L - 64), 10) cast to int."""
  want = np.linspace(0, max(0, length - 64), 10).astype(np.int32)
  np.testing.assert_array_equal(video.eval_clip_starts(length, 32, 2, 10), want)
  indices = video.eval_frame_indices(length, 32, 2, 10).numpy()
  np.testing.assert_array_equal(indices, (want[:, None] + 2 * np.arange(32)) % length)


@pytest.mark.parametrize('hw,want', [((240, 320), (256, 341)), ((480, 270), (455, 256)),
                                     ((256, 256), (256, 256)), ((100, 1000), (256, 2560))])
def test_the_shorter_side_goes_to_the_crop_size(hw, want):
  assert tuple(video.short_side_size(*hw, 256).numpy()) == want


def test_three_crops_are_start_centre_and_end():
  np.testing.assert_array_equal(video.crop_offsets(341, 256, 3), [0, (341 - 256) // 2, 85])
  np.testing.assert_array_equal(video.crop_offsets(340, 256, 3), [0, 42, 84])
  np.testing.assert_array_equal(video.crop_offsets(256, 256, 3), [0, 0, 0])
  np.testing.assert_array_equal(video.crop_offsets(300, 256, 1), [22])


def _photo_frames(frames=4):
  from skimage import data
  photo = data.astronaut()[::2, :, :]  # 256 x 512: a wide frame
  return tf.constant(np.stack([np.roll(photo, 5 * t, axis=1) for t in range(frames)]))


def test_eval_views_are_three_square_crops_of_the_resized_frames():
  frames = _photo_frames()
  views = video.eval_views(frames, 128, 3).numpy()
  assert views.shape == (3, 4, 128, 128, 3) and views.dtype == np.uint8
  resized = tf.image.resize(frames, (128, 256), method='bilinear')
  resized = np.round(np.clip(resized.numpy(), 0, 255)).astype(np.uint8)
  for i, left in enumerate((0, 64, 128)):
    np.testing.assert_array_equal(views[i], resized[:, :, left:left + 128])


def test_a_training_clip_crops_and_flips_every_frame_alike():
  """The box and the flip depend on the seed and the frame size only: each frame of the clip
  is what the same seed does to that frame alone. Each clip is its box, resized, either as is
  or mirrored; over 16 seeds both occur."""
  frames = _photo_frames()
  flipped = []
  for i in range(16):
    clip = video.train_clip(frames, 64, _seed(i)).numpy()
    assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
    for t in range(4):
      alone = video.train_clip(frames[t:t + 1], 64, _seed(i)).numpy()[0]
      np.testing.assert_array_equal(clip[t], alone)
    box_seed, _ = tf.unstack(tf.random.experimental.stateless_split(_seed(i), 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        frames.shape[1:], tf.zeros([0, 0, 4]), seed=box_seed, min_object_covered=0.1,
        aspect_ratio_range=(0.5, 2.0), area_range=(0.08, 1.0), max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    box = frames[:, begin[0]:begin[0] + size[0], begin[1]:begin[1] + size[1]]
    plain = np.round(np.clip(tf.image.resize(box, (64, 64)).numpy(), 0, 255)).astype(np.uint8)
    assert np.array_equal(clip, plain) or np.array_equal(clip, plain[:, :, ::-1])
    flipped.append(not np.array_equal(clip, plain))
    # data.flip=False (moving Fashion-MNIST: a mirror changes the direction) keeps the box.
    np.testing.assert_array_equal(video.train_clip(frames, 64, _seed(i), flip=False), plain)
  assert 0 < sum(flipped) < 16


def _fashion_images(n=50):
  import gzip
  path = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz'
  with gzip.open(path) as f:
    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]


def test_moving_fashion_mnist_moves_a_real_image_in_the_labelled_direction():
  """Frame t+1 is frame t shifted `speed` pixels along the label's direction (on the torus),
  the image's pixels all there; labels are the 8 directions."""
  from rs.data import moving
  images = _fashion_images()
  clips, labels = moving.make(images, 40, frames=6, canvas=40, speed=3, seed=1)
  assert clips.shape == (40, 6, 40, 40, 1) and clips.dtype == np.uint8
  assert set(labels.tolist()) <= set(range(8)) and len(set(labels.tolist())) > 4
  for c, label in zip(clips[..., 0], labels):
    dy, dx = moving.DIRECTIONS[label]
    for t in range(5):
      np.testing.assert_array_equal(c[t + 1], np.roll(c[t], (3 * dy, 3 * dx), axis=(0, 1)))
    # All of one real image's pixels, on an otherwise black canvas.
    pixels = np.sort(c[0].ravel())[-784:]
    assert any(np.array_equal(pixels, np.sort(image.ravel())) for image in images)
  again, _ = moving.make(images, 40, frames=6, canvas=40, speed=3, seed=1)
  np.testing.assert_array_equal(clips, again)


def test_one_frame_of_moving_fashion_mnist_says_nothing_of_its_class():
  """Where the image is at any frame does not depend on the direction: over many clips of
  each class, the image's top-left corner at the last frame is spread over the torus alike
  (each class's positions are the start's uniform draw, shifted)."""
  from rs.data import moving
  dot = np.full((1, 1, 1), 255, np.uint8)  # a one-pixel image: its position is its pixel
  clips, labels = moving.make(dot, 4000, frames=5, canvas=8, speed=2, seed=0)
  corners = np.array([np.argwhere(c[-1, :, :, 0] == 255)[0] for c in clips])
  for label in range(8):
    rows = corners[labels == label][:, 0]
    counts = np.bincount(rows, minlength=8)
    # ~62 per row and class: uniform within sampling noise (well inside 5 sigma).
    assert counts.min() > 25 and counts.max() < 105


def test_video_files_round_trip_and_bad_files_are_named():
  """FFV1 in Matroska returns a moving Fashion-MNIST clip exactly (as RGB); H.264 in MP4 close
  (lossy); bytes that are no video, or an MP4 cut short, raise VideoError naming the file."""
  from rs.data import moving, video_files
  clips, _ = moving.make(_fashion_images(), 2, frames=8, canvas=40, speed=2)
  rgb = np.repeat(clips[0], 3, axis=-1)
  np.testing.assert_array_equal(video_files.decode(video_files.encode(clips[0])), rgb)
  lossy = video_files.encode(clips[0], lossless=False)
  decoded = video_files.decode(lossy)
  assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 6
  for data, name in ((b'not a video', 'notes.mp4'), (lossy[:len(lossy) // 3], 'cut.mp4')):
    with pytest.raises(video_files.VideoError, match=f'^{name}: does not decode as a video'):
      video_files.decode(data, name)
  with pytest.raises(ValueError, match=r'give \[T, H, W, 1 or 3\]'):
    video_files.encode(np.zeros((4, 8, 8), np.uint8))
