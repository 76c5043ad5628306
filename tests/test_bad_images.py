"""Undecodable images in a class-folder dataset: left out, named once in the log and counted, or
a stop naming the file; never an error in the middle of an epoch.

The files are real: scikit-image photographs saved as JPEGs and PNGs, and bad files made from
them (cut short, corrupt header, bad marker in the entropy data, empty, text). What TF does with
each kind is in docs/data.md. The expected batches come from a model written here with eager
TF: epoch e's file order (records), the files the byte test drops (the cut, empty and text
ones: they shift nothing), then each remaining file's official preprocessing at its position,
left out when it raises.
"""
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from rs.data import records, streaming, tf_preprocess

pytest.importorskip('skimage.data')
from rs.tools import photo_dataset  # noqa: E402

SIZE, BATCH = 32, 4
SCREENED = ('cut.jpg', 'empty.jpg', 'text.jpg', 'cut.png')  # dropped by the byte test


def bad_files(jpeg: bytes, png: bytes) -> dict[str, bytes]:
  sos = jpeg.index(b'\xff\xda')
  entropy = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], 'big')  # after the SOS header
  middle = (entropy + len(jpeg)) // 2
  dht = jpeg.index(b'\xff\xc4')
  return {
      'cut.jpg': jpeg[:len(jpeg) // 2],
      'empty.jpg': b'',
      'text.jpg': b'not an image\n',
      'cut.png': png[:len(png) // 2],
      # Whole on the outside: the byte test passes them. Decoding fails always (a Huffman table
      # of 0xFF bytes), or for crops that reach the marker (0xFF 0x39 is none).
      'bad_header.jpg': jpeg[:dht + 5] + b'\xff' * 16 + jpeg[dht + 21:],
      'bad_marker.jpg': jpeg[:middle] + b'\xff\x39' * 4 + jpeg[middle + 8:],
  }


def write(path: str, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """ROOT/{train,validation}/CLASS/: good JPEGs and every kind of bad file, {split: bad paths}.

  train: 24 photographs, a JPEG with bytes after its end (valid: kept) and the 6 bad files;
  validation: 9 photographs and the 6 bad files, the header-corrupt one last of all."""
  root = str(tmp_path_factory.mktemp('bad_images'))
  train = photo_dataset.examples(3, 8, size=(64, 48))
  photo_dataset.write_folder(root, 'train', train)
  photo_dataset.write_folder(root, 'validation', photo_dataset.examples(3, 3, (64, 48), seed=1))
  classes = sorted(photo_dataset.PHOTOS[:3])
  jpeg = photo_dataset.encode(train[0][0], 'jpeg')
  write(f'{root}/train/{classes[0]}/trailing.jpg', jpeg + bytes(16))
  bad = {'train': [], 'validation': []}
  for i, (name, data) in enumerate(bad_files(jpeg, photo_dataset.encode(train[0][0], 'png'))
                                   .items()):
    bad['train'].append(write(f'{root}/train/{classes[i % 3]}/{name}', data))
    last = name == 'bad_header.jpg'  # the last record: only the end record can report it
    path = f'{root}/validation/{classes[-1] if last else classes[i % 3]}/{"zz_" * last}{name}'
    bad['validation'].append(write(path, data))
  return root, bad


def pipeline(root, **kw):
  kw = {'randaugment_layers': 0, 'host': 0, 'hosts': 1} | kw
  return streaming.StreamingPipeline(records.FolderRecords(root), 'train', 'validation', SIZE,
                                     BATCH, BATCH, seed=0, **kw)


def screened(paths):
  return [p for p in paths if os.path.basename(p) not in SCREENED]


def model_epoch(source, epoch: int, per_epoch: int, skip: int = 0, count: int | None = None):
  """The first `count` [(path, image)] of training epoch `epoch` from its `skip`-th screened
  record (one host), and the files whose preprocessing failed before the last of them."""
  order_seed = tf.constant([0, -1 - epoch], tf.int64)
  paths = [ex['path'].decode() for ex in
           source.records('train', order_seed=order_seed).as_numpy_iterator()]
  rows, failed = [], []
  for index, path in enumerate(screened(paths * 2)):  # a second pass tops the epoch up
    if index < skip:
      continue
    seed = tf.constant([0, epoch * per_epoch + index], tf.int64)  # its position
    try:
      rows.append((path, tf_preprocess.train_image(tf.constant(read(path)), SIZE, seed).numpy()))
    except tf.errors.OpError:
      failed.append(path)
    if len(rows) == (count or per_epoch - skip):
      return rows, failed
  raise AssertionError('the model ran out of records')


def model_eval(source):
  """[(path, image)] of every validation image that decodes, in file order."""
  rows = []
  for path in screened(source.files('validation')[0]):
    try:
      rows.append((path, tf_preprocess.eval_image_from_bytes(tf.constant(read(path)),
                                                             SIZE).numpy()))
    except tf.errors.OpError:
      continue
  return rows


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def rows_of(batches):
  return tuple(np.concatenate([b[key] for b in batches]) for key in ('image', 'label'))


def check_rows(batches, model, source):
  images, labels = rows_of(batches)
  label_of = dict(zip(*source.files('train')))
  np.testing.assert_array_equal(labels, [label_of[path] for path, _ in model])
  np.testing.assert_array_equal(images, np.stack([image for _, image in model]))


def test_training_leaves_bad_files_out_and_names_each_once(dataset, caplog):
  root, bad = dataset
  p = pipeline(root)
  steps = p.num_train_examples // BATCH  # 31 files: 7 batches of 4 per epoch
  per_epoch = steps * BATCH
  with caplog.at_level(logging.WARNING):
    batches = take(p.train_iter(0), 2 * steps + 1)  # no error over two epochs
  models = [model_epoch(p.source, e, per_epoch, count=per_epoch if e < 2 else BATCH)
            for e in range(3)]
  for e, (model, _) in enumerate(models):
    check_rows(batches[e * steps:(e + 1) * steps], model, p.source)
  # Reported: the screened files, and those whose preprocessing failed before an image that
  # was taken (bad_header always; bad_marker when a crop reached the marker).
  failed = {path for _, failures in models for path in failures}
  assert bad['train'][4] in failed  # bad_header.jpg
  want = set(bad['train']) - set(screened(bad['train'])) | failed
  assert set(p.undecodable.paths) == want
  assert p.undecodable.count == len(want)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  for path in want:  # once each, though met in every epoch
    assert sum(path in message for message in warnings) == 1, path
  assert not any('trailing.jpg' in message for message in warnings)  # doubted, then kept


def test_resuming_repeats_the_model_and_realigns_at_the_next_epoch(dataset):
  root, _ = dataset
  p = pipeline(root)
  steps = p.num_train_examples // BATCH
  per_epoch = steps * BATCH
  straight = take(p.train_iter(0), 2 * steps + 1)
  for start in (3, steps + 5):  # mid epoch 0, mid epoch 1
    epoch, offset = divmod(start, steps)
    resumed = take(p.train_iter(start), steps - offset + 1)
    # The rest of the epoch: a pure function of (seed, files, start step)...
    check_rows(resumed[:-1], model_epoch(p.source, epoch, per_epoch, offset * BATCH)[0],
               p.source)
    # ...and the next epoch is the uninterrupted run's, whatever failed before.
    np.testing.assert_array_equal(resumed[-1]['image'], straight[(epoch + 1) * steps]['image'])


def test_eval_counts_every_image_that_decodes_exactly_once(dataset, caplog):
  root, bad = dataset
  p = pipeline(root)
  model = model_eval(p.source)
  with caplog.at_level(logging.WARNING):
    batches = list(p.eval_iter())
  assert len(batches) == p.num_eval_batches  # padded to the count of files
  kept = np.concatenate([b['mask'] for b in batches]) > 0
  images, labels = rows_of(batches)
  label_of = dict(zip(*p.source.files('validation')))
  np.testing.assert_array_equal(labels[kept], [label_of[path] for path, _ in model])
  np.testing.assert_array_equal(images[kept], np.stack([image for _, image in model]))
  assert p.eval_skipped == 9 + len(bad['validation']) - len(model)
  failed = set(bad['validation']) - {path for path, _ in model}
  assert set(p.undecodable.paths) == failed  # the last record's too
  assert any('Evaluation left out' in r.getMessage() for r in caplog.records)
  # Over two hosts: still each decodable image once.
  hosts = [pipeline(root, host=h, hosts=2) for h in range(2)]
  per_host = [list(h.eval_iter()) for h in hosts]
  seen = np.concatenate([b['label'][b['mask'] > 0] for host in per_host for b in host])
  np.testing.assert_array_equal(np.sort(seen), np.sort([label_of[path] for path, _ in model]))
  assert sum(h.eval_skipped for h in hosts) == p.eval_skipped


def test_stop_mode_raises_naming_the_file(dataset, tmp_path):
  root, bad = dataset
  p = pipeline(root, bad_images='stop')
  steps = p.num_train_examples // BATCH
  iterator, taken = p.train_iter(0), 0
  with pytest.raises(streaming.UndecodableImageError, match='bad_images=skip') as error:
    for _ in range(steps):
      next(iterator)
      taken += 1
  assert taken < steps  # within the first epoch
  assert any(path in str(error.value) for path in bad['train'])
  with pytest.raises(streaming.UndecodableImageError) as error:
    list(pipeline(root, bad_images='stop').eval_iter())
  assert any(path in str(error.value) for path in bad['validation'])
  # A file that only fails as it decodes (the backstop) stops the run too.
  only = str(tmp_path / 'only')  # 7 photographs and bad_header.jpg: 2 passes fill an epoch
  photo_dataset.write_folder(only, 'train', photo_dataset.examples(1, 7, size=(64, 48)))
  photo_dataset.write_folder(only, 'validation', photo_dataset.examples(1, 1, size=(64, 48)))
  header = write(f'{only}/train/astronaut/bad_header.jpg', read(bad['train'][4]))
  with pytest.raises(streaming.UndecodableImageError, match=f'undecodable image {header}'):
    take(pipeline(only, bad_images='stop').train_iter(0), 2)


def test_decoded_cache_keeps_only_images_that_decode(dataset):
  root, bad = dataset
  p = pipeline(root, cache_decoded=True)
  steps = p.num_train_examples // BATCH
  batches = take(p.train_iter(0), 2 * steps)
  assert set(p.undecodable.paths) == set(bad['train'])  # the cache decodes whole images
  good_labels = [label for path, label in zip(*p.source.files('train')) if path not in bad['train']]
  first_pass = np.concatenate([b['label'] for b in batches[:steps]])[:len(good_labels)]
  np.testing.assert_array_equal(np.sort(first_pass), np.sort(good_labels))


def test_too_few_decodable_images_stop_instead_of_waiting_forever(dataset, tmp_path):
  root, bad = dataset
  few = str(tmp_path / 'few')
  photo_dataset.write_folder(few, 'train', photo_dataset.examples(1, 1, size=(64, 48)))
  photo_dataset.write_folder(few, 'validation', photo_dataset.examples(1, 1, size=(64, 48)))
  for path in bad['train'][:5]:  # not bad_marker.jpg: some crops of it decode
    write(f'{few}/train/astronaut/{os.path.basename(path)}', read(path))
  with pytest.raises(streaming.UndecodableImageError, match='too few images of train decode'):
    take(pipeline(few).train_iter(0), 1)  # 6 files, 1 decodes: two passes give 2 of 4


def spoil_tfds_record(data_dir: str, split: str, index: int, image: bytes) -> str:
  """Replaces the image of record `index` of a prepared tfds split; the record's name."""
  path, = tf.io.gfile.glob(f'{data_dir}/*/*/*-{split}.tfrecord-*')
  examples = [tf.train.Example.FromString(r) for r in
              tf.data.TFRecordDataset(path).as_numpy_iterator()]
  examples[index].features.feature['image'].bytes_list.value[0] = image
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  return f'{path}[{index}]'


def test_tfds_records_get_the_same_guard(dataset, tmp_path):
  _, bad = dataset
  data_dir = str(tmp_path / 'tfds')
  photos = photo_dataset.examples(3, 3, size=(64, 48))
  photo_dataset.write_tfds(data_dir, 'rs_bad9', {'train': photos, 'validation': photos[:4]}, 3)
  cut = spoil_tfds_record(data_dir, 'train', 2, read(bad['train'][0]))  # cut.jpg: screened
  spoil_tfds_record(data_dir, 'validation', 1, read(bad['train'][4]))  # bad_header.jpg
  p = streaming.StreamingPipeline(records.TfdsRecords('rs_bad9', data_dir), 'train',
                                  'validation', SIZE, BATCH, BATCH, host=0, hosts=1)
  labels = np.concatenate([b['label'] for b in take(p.train_iter(0), 2 * 2)])
  assert len(labels) == 16 and (labels >= 0).all()
  assert list(p.undecodable.paths) == [cut]  # named by record file and index
  assert sum(b['mask'].sum() for b in p.eval_iter()) == 3 and p.eval_skipped == 1
  assert p.undecodable.unnamed == 1  # a backstop drop: tfds record order is not known


def test_byte_test_and_decode_verdicts_on_each_kind(dataset):
  _, bad = dataset
  photo = photo_dataset.examples(1, 1, size=(64, 48))[0][0]
  for fmt in ('jpeg', 'png', 'gif', 'bmp'):
    data = photo_dataset.encode(photo, fmt)
    assert bool(tf_preprocess.well_formed(tf.constant(data))), fmt
    assert tf_preprocess.decode_error(data) is None, fmt
  trailing = photo_dataset.encode(photo, 'jpeg') + bytes(16)
  assert not bool(tf_preprocess.well_formed(tf.constant(trailing)))  # doubted...
  assert tf_preprocess.decode_error(trailing) is None  # ...and kept
  for path in bad['train']:
    data = read(path)
    screened_out = os.path.basename(path) in SCREENED
    assert bool(tf_preprocess.well_formed(tf.constant(data))) != screened_out, path
    assert tf_preprocess.decode_error(data), path  # none decodes whole
  assert tf_preprocess.decode_error(read(bad['train'][0])).startswith('truncated')
  assert tf_preprocess.decode_error(b'') == 'empty file'
