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
