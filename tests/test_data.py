"""Fashion-MNIST loading against the original files, and deterministic, exact batching."""
import gzip
import os

import numpy as np
import pytest

from rs.data import in_memory, preprocess, sources

FILES = sources.DEBIAN_FASHION_MNIST


@pytest.fixture(scope='module')
def fmnist():
  return {s: sources.load_array_split('fashion_mnist', s) for s in ('train', 'test')}


def test_official_split_sizes_and_first_test_label(fmnist):
  assert len(fmnist['train']) == 60_000 and len(fmnist['test']) == 10_000
  assert fmnist['train'].images.shape == (60_000, 28, 28, 1)
  assert fmnist['train'].images.dtype == np.uint8
  # The label file's first label is byte 8, after the magic number and the count.
  with gzip.open(os.path.join(FILES, 't10k-labels-idx1-ubyte.gz')) as f:
    raw = f.read()
  assert fmnist['test'].labels[0] == raw[8] == 9  # 9: ankle boot
  np.testing.assert_array_equal(fmnist['test'].labels, np.frombuffer(raw, np.uint8, offset=8))
  assert sorted(np.bincount(fmnist['train'].labels)) == [6000] * 10


def test_split_slices(fmnist):
  part = sources.load_array_split('fashion_mnist', 'test[100:350]')
  np.testing.assert_array_equal(part.labels, fmnist['test'].labels[100:350])


def test_missing_files_give_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'nowhere'))
  monkeypatch.setattr(sources, '_load_tfds', lambda *a: (_ for _ in ()).throw(OSError('offline')))
  with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
    sources.load_array_split('fashion_mnist', 'test', data_dir=str(tmp_path / 'tfds'))


def test_truncated_idx_file_is_named(tmp_path):
  path = tmp_path / 'bad-idx3-ubyte'
  path.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, 'big') + bytes(10))
  with pytest.raises(ValueError, match='truncated'):
    sources.read_idx(str(path))


def test_pad_crop_flip_translates_and_mirrors():
  image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
  rng = np.random.default_rng(0)
  seen_flip = seen_plain = False
  for _ in range(50):
    out = preprocess.pad_crop_flip(image, rng, pad=1)[0, :, :, 0]
    # Each output is a window of the zero-padded image, maybe mirrored left-right.
    padded = np.pad(image[0, :, :, 0], 1)
    windows = [padded[y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
    plain = any(np.array_equal(out, w) for w in windows)
    flipped = any(np.array_equal(out, w[:, ::-1]) for w in windows)
    assert plain or flipped
    seen_plain |= plain and not flipped
    seen_flip |= flipped and not plain
  assert seen_plain and seen_flip


def small_pipeline(n_train=100, n_eval=23, **kw):
  rng = np.random.default_rng(0)
  split = lambda n: sources.ArraySplit(rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                                       np.arange(n, dtype=np.int32), 10)
  return in_memory.InMemoryPipeline(split(n_train), split(n_eval), batch_size=16,
                                    eval_batch_size=8, seed=3, **kw)


def test_train_batches_are_a_pure_function_of_seed_and_step():
  a, b = small_pipeline(), small_pipeline()
  for s in (0, 5, 6, 13):
    x, y = a.train_batch(s), b.train_batch(s)
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  it = a.train_iter(4)
  for s in range(4, 9):  # the prefetching iterator yields exactly train_batch(s)
    np.testing.assert_array_equal(next(it)['label'], a.train_batch(s)['label'])


def test_each_epoch_is_a_permutation_without_repeats():
  p = small_pipeline(augment='none')
  labels = np.concatenate([p.train_batch(s)['label'] for s in range(6)])  # 6 full batches
  assert len(set(labels)) == 96
  epoch2 = np.concatenate([p.train_batch(s)['label'] for s in range(6, 12)])
  assert not np.array_equal(labels, epoch2)


def test_eval_covers_every_example_once_with_padding_masked():
  p = small_pipeline(n_eval=23)
  batches = list(p.eval_iter())
  assert len(batches) == p.num_eval_batches == 3
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(labels, np.arange(23))
  assert sum(b['mask'].sum() for b in batches) == 23


def test_batch_larger_than_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match='batch_size'):
    small_pipeline(n_train=10)


@pytest.mark.parametrize('channels', [1, 3])
def test_randaugment_on_in_memory_batches_is_the_streamed_op_per_image(channels, monkeypatch):
  """data.randaugment_layers on an in-memory dataset: each image of a batch is
  rs.data.randaugment.distort of its shifted-and-flipped self (gray images through RGB and the
  luma rule, as streamed), with its own seed; a pure function of (seed, step) whatever the host
  count."""
  import jax
  import tensorflow as tf
  from rs.data import randaugment, tf_preprocess
  rng = np.random.default_rng(1)
  split = sources.ArraySplit(rng.integers(0, 255, (64, 12, 12, channels), dtype=np.uint8),
                             np.arange(64, dtype=np.int32), 64)
  make = lambda **kw: in_memory.InMemoryPipeline(split, split, 16, 16, seed=5, **kw)
  plain, augmented = make(), make(randaugment_layers=2, randaugment_magnitude=12)
  base, batch = plain.train_batch(7), augmented.train_batch(7)
  np.testing.assert_array_equal(base['label'], batch['label'])
  assert batch['image'].dtype == np.uint8 and batch['image'].shape == base['image'].shape
  assert (batch['image'] != base['image']).mean() > 0.3  # RandAugment changed the images
  seeds = np.random.default_rng([5, 7, 2]).integers(0, 2**31, (16, 2))
  for i in (0, 9, 15):
    rgb = tf.constant(np.repeat(base['image'][i], 3 // channels, axis=-1))
    want = randaugment.distort(rgb, 2, 12, tf.constant(seeds[i]))
    want = tf_preprocess.grayscale(want) if channels == 1 else want
    np.testing.assert_array_equal(batch['image'][i], want.numpy())
  np.testing.assert_array_equal(make(randaugment_layers=2, randaugment_magnitude=12)
                                .train_batch(7)['image'], batch['image'])
  # Two hosts: each gets its half of the very same global batch.
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  for host in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    half = augmented.train_batch(7)['image']
    np.testing.assert_array_equal(half, batch['image'][host * 8:(host + 1) * 8])


def test_bundled_datasets_digits_and_faces():
  """scikit-learn's digits (1,797 = 1,297 + 500, 16 gray levels scaled to 0..255) and the LFW
  subset, whose training split alternates the classes so that any slice is balanced."""
  train, test = (sources.load_array_split('digits', s) for s in ('train', 'test'))
  assert (len(train), len(test)) == (1297, 500) and train.images.shape[1:] == (8, 8, 1)
  assert set(np.unique(train.images)) == {round(k * 255 / 16) for k in range(17)}
  assert min(np.bincount(test.labels)) >= 45  # every class in the test split
  from sklearn.datasets import load_digits
  np.testing.assert_array_equal(test.labels, load_digits().target[1297:])
  minival = sources.load_array_split('lfw_faces', 'train[120:]')
  assert list(np.bincount(minival.labels)) == [20, 20]
