"""The streaming tf.data pipeline: seeded order, exact resume, host shares, official crops."""
import numpy as np
import pytest
import tensorflow as tf

from rs.data import records, streaming, tf_preprocess

pytest.importorskip('skimage.data')
from rs.tools import photo_dataset  # noqa: E402

NUM = 12  # one photograph per class, so a label names its example


@pytest.fixture(scope='module')
def photos():
  return photo_dataset.examples(NUM, 1, size=(80, 60))


@pytest.fixture(scope='module')
def folder(tmp_path_factory, photos):
  root = str(tmp_path_factory.mktemp('folder'))
  photo_dataset.write_folder(root, 'train', photos)
  photo_dataset.write_folder(root, 'validation', photos[:5], fmt='png')
  return root


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory, photos):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  photo_dataset.write_tfds(data_dir, 'rs_photos12', {'train': photos, 'validation': photos[:5]},
                           NUM)
  return data_dir


@pytest.fixture(params=['folder', 'tfds'])
def source(request, folder, tfds_dir):
  if request.param == 'folder':
    return records.FolderRecords(folder)
  return records.TfdsRecords('rs_photos12', tfds_dir)


def pipeline(source, batch_size=4, seed=0, **kw):
  return streaming.StreamingPipeline(source, 'train', 'validation', image_size=16,
                                     batch_size=batch_size, eval_batch_size=4, seed=seed, **kw)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def labels_by_epoch(batches, steps_per_epoch):
  labels = np.concatenate([b['label'] for b in batches])
  return labels.reshape(-1, steps_per_epoch * len(batches[0]['label']))


def test_each_epoch_is_a_seeded_permutation(source):
  batches = take(pipeline(source).train_iter(0), 6)  # 12 / 4 = 3 steps per epoch
  epochs = labels_by_epoch(batches, 3)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
  again = labels_by_epoch(take(pipeline(source).train_iter(0), 6), 3)
  np.testing.assert_array_equal(again, epochs)
  other = labels_by_epoch(take(pipeline(source, seed=1).train_iter(0), 6), 3)
  assert not np.array_equal(other, epochs)


@pytest.mark.parametrize('cache_decoded', [False, True])
def test_resuming_mid_epoch_repeats_the_same_batches(source, cache_decoded):
  # RandAugment (slow to trace) once per source; the decoded cache without it.
  p = pipeline(source, cache_decoded=cache_decoded, randaugment_layers=0 if cache_decoded else 2)
  straight = take(p.train_iter(0), 7)
  resumed = take(p.train_iter(4), 3)  # mid epoch 1, into epoch 2
  for want, got in zip(straight[4:], resumed):
    np.testing.assert_array_equal(got['label'], want['label'])
    np.testing.assert_array_equal(got['image'], want['image'])
  for epoch in labels_by_epoch(straight[:6], 3):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM))
  # RandAugment works on uint8, as TF1; without it the bicubic overshoot stays (float).
  assert straight[0]['image'].dtype == (np.float32 if cache_decoded else np.uint8)


def test_hosts_read_disjoint_shares_that_make_the_global_batch(source):
  hosts = [pipeline(source, host=h, hosts=2) for h in range(2)]
  per_host = [take(p.train_iter(0), 3) for p in hosts]
  assert per_host[0][0]['label'].shape == (2,)  # local rows of a global batch of 4
  epoch = np.concatenate([b['label'] for h in per_host for b in h])
  np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM))
  # A host's images depend on its position in the global batch, not on the host count alone.
  single = take(pipeline(source).train_iter(0), 1)[0]
  assert not np.array_equal(single['image'][:2], per_host[0][0]['image'])


def test_four_hosts_read_each_example_once_per_epoch(source):
  """12 examples, a global batch of 4 over 4 hosts: every epoch, each example is read by
  exactly one host, and the hosts' rows together are the epoch's permutation."""
  hosts = [pipeline(source, host=h, hosts=4) for h in range(4)]
  per_host = [take(p.train_iter(0), 6) for p in hosts]  # 2 epochs of 3 steps
  for epoch in range(2):
    read = [b['label'] for h in per_host for b in h[3 * epoch:3 * epoch + 3]]
    np.testing.assert_array_equal(np.sort(np.concatenate(read)), np.arange(NUM))


def test_hosts_with_different_file_counts_step_together(source):
  """5 examples over 4 hosts (2, 1, 1, 1 files): every host gives one row per step for as
  long as training runs (a host that ran dry would hang the others in a collective), from its
  own files only, and no example twice in an epoch."""
  hosts = [streaming.StreamingPipeline(source, 'validation', 'validation', image_size=16,
                                       batch_size=4, eval_batch_size=4, host=h, hosts=4)
           for h in range(4)]
  assert hosts[0].steps_per_epoch == 1.25  # 5 / 4: one full batch per epoch
  shares = [{int(ex['label']) for ex in source.records('validation', h, 4)} for h in range(4)]
  assert sorted(map(len, shares)) == [1, 1, 1, 2]
  per_host = [take(p.train_iter(0), 4) for p in hosts]  # 4 epochs of 1 step
  for h, batches in enumerate(per_host):
    assert all(b['label'].shape == (1,) and int(b['label'][0]) in shares[h] for b in batches)
  for step in range(4):
    labels = [int(per_host[h][step]['label'][0]) for h in range(4)]
    assert len(set(labels)) == 4


def test_four_hosts_evaluate_every_example_once(source):
  hosts = [pipeline(source, host=h, hosts=4) for h in range(4)]  # 5 examples: 2 + 1 + 1 + 1
  batches = [list(p.eval_iter()) for p in hosts]
  assert [len(b) for b in batches] == [2] * 4  # ceil(5 / 4): the same count on every host
  seen = np.concatenate([b['label'][b['mask'] > 0] for host in batches for b in host])
  everything = [int(ex['label']) for ex in source.records('validation')]
  np.testing.assert_array_equal(np.sort(seen), np.sort(everything))


def test_images_are_the_official_train_preprocessing_of_their_record(source, photos):
  p = pipeline(source, randaugment_layers=0)
  batch = next(p.train_iter(1))
  encoded = {int(ex['label']): ex['image'] for ex in source.records('train')}
  for row, label in enumerate(batch['label']):
    position = 1 * 4 + row  # step 1 of a global batch of 4, one host
    want = tf_preprocess.train_image(encoded[int(label)], 16, tf.constant([0, position],
                                                                        tf.int64))
    np.testing.assert_array_equal(batch['image'][row], want.numpy())


def test_eval_counts_every_example_once_across_hosts(source):
  hosts = [pipeline(source, host=h, hosts=2) for h in range(2)]  # 5 examples: 3 + 2
  batches = [list(p.eval_iter()) for p in hosts]
  assert [len(b) for b in batches] == [hosts[0].num_eval_batches] * 2 == [2, 2]
  seen = np.concatenate([b['label'][b['mask'] > 0] for host in batches for b in host])
  everything = [int(ex['label']) for ex in source.records('validation')]
  np.testing.assert_array_equal(np.sort(seen), np.sort(everything))
  assert sum(b['mask'].sum() for host in batches for b in host) == 5


def test_inception_crop_windows_follow_the_official_ranges():
  shape = tf.constant([375, 500, 3])
  for i in range(200):
    top, left, h, w = tf_preprocess.inception_crop_window(
        shape, tf.constant([7, i], tf.int64), 160).numpy()
    assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
    if (h, w) == (333, 333):  # the center-crop fallback: 375 * 160 / 192
      continue
    assert 0.08 * 0.95 <= h * w / (375 * 500) <= 1.0
    assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


def test_inception_crop_falls_back_to_the_center_crop():
  # A 10 x 1000 strip admits no crop with aspect 3/4..4/3 covering 8% of its area.
  window = tf_preprocess.inception_crop_window(tf.constant([10, 1000, 3]),
                                               tf.constant([0, 0], tf.int64), 64)
  top, left, side = tf_preprocess.center_crop_window(10, 1000, 64)
  np.testing.assert_array_equal(window.numpy(), [top, left, side, side])


def test_fused_decode_and_crop_matches_decoding_then_cropping(photos):
  image = photos[0][0]
  window = tf.constant([5, 7, 40, 50])
  reference = image[5:45, 7:57]  # numpy crop of the original pixels
  png = tf_preprocess.decode_crop(tf.constant(photo_dataset.encode(image, 'png')), window)
  np.testing.assert_array_equal(png.numpy(), reference)  # lossless: exact
  jpeg_bytes = photo_dataset.encode(image, 'jpeg')
  jpeg = tf_preprocess.decode_crop(tf.constant(jpeg_bytes), window).numpy().astype(int)
  whole = tf.io.decode_jpeg(jpeg_bytes).numpy()[5:45, 7:57].astype(int)
  assert np.abs(jpeg - whole).mean() < 1.0  # chroma upsampling differs at window edges only


def test_flip_is_a_mirror_of_the_resized_crop(photos):
  image = tf.constant(photos[1][0])
  crop = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)), tf.float32)
  flips = 0
  for i in range(20):
    out = tf_preprocess.augment(crop, tf.constant([1, i], tf.int64)).numpy()
    if np.array_equal(out, crop.numpy()[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, crop.numpy())
  assert 3 <= flips <= 17
  del image


def test_clear_errors_for_bad_sources(tmp_path, folder, source):
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    records.FolderRecords(str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match=r"split folders \['train', 'validation'\], not 'val'"):
    records.FolderRecords(folder).files('val')
  with pytest.raises(ValueError, match='batch_size=6 does not divide over 4 hosts'):
    pipeline(source, batch_size=6, hosts=4, host=0)
  with pytest.raises(ValueError, match='resize_method'):
    pipeline(source, resize_method='nearest')
