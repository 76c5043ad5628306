"""Moving Fashion-MNIST: real images moving on a canvas, the class being the direction of motion
(issue 20's proof that the 3D network uses time).

Each clip places one Fashion-MNIST image (its own label is ignored) at a uniformly random
position of a `canvas` x `canvas` torus and moves it `speed` pixels per frame in one of the 8
compass directions, wrapping at the borders. Because the start is uniform on the torus, every
single frame has the same distribution whatever the direction: a network that sees one frame
cannot beat chance (1/8), and one that sees two frames can be perfect.
"""
import numpy as np

# (rows, columns) per frame for speed 1, class i: E, NE, N, NW, W, SW, S, SE.
DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
CLASS_NAMES = ('east', 'north-east', 'north', 'north-west', 'west', 'south-west', 'south',
               'south-east')


def clip(image: np.ndarray, direction: int, start: tuple[int, int], frames: int,
         canvas: int, speed: int) -> np.ndarray:
  """uint8 [frames, canvas, canvas]: `image` pasted at `start` (top-left, on the torus), then
  rolled `speed` pixels per frame in `direction`."""
  h, w = image.shape
  if h > canvas or w > canvas:
    raise ValueError(f'a {h}x{w} image does not fit a {canvas}x{canvas} canvas')
  first = np.zeros((canvas, canvas), np.uint8)
  first[:h, :w] = image
  first = np.roll(first, start, axis=(0, 1))
  dy, dx = DIRECTIONS[direction]
  return np.stack([np.roll(first, (t * speed * dy, t * speed * dx), axis=(0, 1))
                   for t in range(frames)])


def make(images: np.ndarray, num_clips: int, frames: int = 16, canvas: int = 48,
         speed: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(clips uint8 [num_clips, frames, canvas, canvas, 1], labels int32 [num_clips]): each clip
  a random image of `images` [N, H, W] moving in a random direction from a random start; a
  pure function of its arguments."""
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, len(images), num_clips)
  labels = rng.integers(0, len(DIRECTIONS), num_clips).astype(np.int32)
  starts = rng.integers(0, canvas, (num_clips, 2))
  clips = np.stack([clip(images[p], int(d), tuple(s), frames, canvas, speed)
                    for p, d, s in zip(picks, labels, starts)])
  return clips[..., None], labels
