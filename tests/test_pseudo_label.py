"""rs.pseudo_label: a teacher's probabilities for unlabeled images, in shards that resume.

The stored probabilities are checked against independent forwards of the same weights (rs.export's
inference function on the in-memory arrays; rs.predict's per-file path on photographs), the
selection against Noisy Student's rule worked by hand, and a resumed labelling against an
uninterrupted one, byte for byte.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command
from rs import export, pseudo_label, weights
from rs.data import preprocess, pseudo, sources

SPLIT = 'test[:300]'


def read_records(out: str) -> dict[int, dict]:
  """{id: parsed example} of every shard in DIR/shards."""
  rows = {}
  for path in sorted(tf.io.gfile.glob(f'{out}/shards/*.tfrecord')):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      f = tf.train.Example.FromString(raw).features.feature
      row = {'key': f['key'].bytes_list.value[0].decode(),
             'encoded': f['image/encoded'].bytes_list.value[0],
             'label': f['label'].int64_list.value[0],
             'confidence': f['confidence'].float_list.value[0],
             'classes': np.array(f['classes'].int64_list.value),
             'probabilities': np.array(f['probabilities'].float_list.value, np.float32),
             'rest': f['rest'].float_list.value[0]}
      rows[f['id'].int64_list.value[0]] = row
  return rows


def file_bytes(directory: str) -> dict[str, bytes]:
  return {os.path.relpath(os.path.join(root, name), directory):
          open(os.path.join(root, name), 'rb').read()
          for root, _, names in os.walk(directory) for name in names}


@pytest.fixture(scope='module')
def labelled(tiny_run, tmp_path_factory):
  """A trained run (its EMA weights) labels Fashion-MNIST test[:300] in 3 shards."""
  workdir, _ = tiny_run
  out = str(tmp_path_factory.mktemp('pseudo') / 'fm')
  manifest = pseudo_label.label(workdir, 'fashion_mnist', SPLIT, None, out, num_shards=3,
                                per_class=40, min_threshold=0.2)
  return workdir, out, manifest


def test_probabilities_are_the_teachers_own_on_the_arrays(labelled):
  workdir, out, manifest = labelled
  variables, description = export.run_weights(workdir, 'ema')
  model = description.build()
  data = sources.load_array_split('fashion_mnist', SPLIT)
  images = preprocess.resize(data.images, description.input.image_size)  # (N, 28, 28, 1)
  expected = np.asarray(export.inference_fn(model, variables, description)(images)
                        ['probabilities'])
  rows = read_records(out)
  assert sorted(rows) == list(range(300))  # every image once, numbered by its position
  for i, row in rows.items():
    assert row['key'] == f'fashion_mnist:{SPLIT}[{i}]'
    # Full probabilities (top_k 0), most probable first, in class order after the scatter.
    full = np.zeros(10, np.float32)
    full[row['classes']] = row['probabilities']
    np.testing.assert_allclose(full, expected[i], atol=2e-6)
    assert row['label'] == expected[i].argmax() == row['classes'][0]
    assert row['confidence'] == row['probabilities'][0] and row['rest'] < 1e-6
    # The image itself travels with its label: the PNG holds the original pixels.
    np.testing.assert_array_equal(tf.io.decode_png(row['encoded']).numpy(), data.images[i])
  assert manifest['examples'] == 300 and manifest['undecodable'] == 0
  assert manifest['per_class'] == np.bincount(expected.argmax(-1), minlength=10).tolist()
  assert sum(manifest['confidence_histogram']['counts']) == 300
  assert manifest['teacher']['num_classes'] == 10 and manifest['num_shards'] == 3


def test_the_selection_follows_noisy_students_rule(labelled):
  _, out, manifest = labelled
  arrays = [pseudo.read_arrays(out, i, 3) for i in range(3)]
  labels = np.concatenate([a['labels'] for a in arrays])
  confidences = np.concatenate([a['confidences'] for a in arrays])
  copies = np.concatenate([np.load(f'{out}/selection/part-{i:05d}-of-00003.npy')
                           for i in range(3)])
  selection = manifest['selection']
  for c in range(10):
    mine = labels == c
    threshold = selection['thresholds'][c]
    kept = mine & (confidences >= threshold)
    assert not copies[mine & ~kept].any()  # below the class's threshold: never
    if kept.any():
      # The highest threshold on the 0.01 grid that keeps 40, else the minimum, 0.2.
      assert threshold == 0.2 or np.sum(confidences[mine] >= threshold) >= 40
      assert threshold == 1.0 or np.sum(confidences[mine] >= threshold + 0.01) < 40
      expected = 40 / kept.sum()  # copies per kept image, rounded up or down at random
      assert set(copies[kept]) <= {int(np.floor(expected)), int(np.ceil(expected))}
  assert selection['selected_per_class'] == np.bincount(labels, copies, 10).astype(int).tolist()


def test_select_by_hand():
  """For 2 per class: class 0 reaches 2 images at threshold 0.90, class 1 at 0.35 (one copy
  each); class 2 has none. For 4: both walk down to the minimum 0.3, where class 0 keeps 3
  images (4/3 copies each) and class 1 keeps 2 (2 copies each)."""
  labels = np.array([0, 0, 0, 0, 1, 1, 1])
  confidences = np.array([0.95, 0.9, 0.5, 0.2, 0.4, 0.35, 0.1])
  thresholds, copies = pseudo_label.select(labels, confidences, 3, per_class=2,
                                           min_threshold=0.3)
  np.testing.assert_allclose(thresholds, [0.9, 0.35, 0.3])
  np.testing.assert_allclose(copies, [1.0, 1.0, 0.0])
  thresholds, copies = pseudo_label.select(labels, confidences, 3, per_class=4,
                                           min_threshold=0.3)
  np.testing.assert_allclose(thresholds, [0.3, 0.3, 0.3])
  np.testing.assert_allclose(copies, [4 / 3, 2.0, 0.0])
  thresholds, copies = pseudo_label.select(labels, confidences, 3, None, 0.3)
  np.testing.assert_allclose(copies, 1.0)  # no balancing: the threshold alone


def test_a_killed_labelling_resumes_to_the_same_files(labelled, tmp_path, caplog):
  workdir, out, _ = labelled
  copy = str(tmp_path / 'copy')
  shutil.copytree(out, copy)
  before = file_bytes(copy)
  # Killed in shard 1: its records half written, no completion file; shards 0 and 2 finished.
  for suffix in ('.json', '.npz', '.tfrecord'):
    os.remove(f'{copy}/shards/part-00001-of-00003{suffix}')
  with open(f'{copy}/shards/part-00001-of-00003.tfrecord.writing', 'wb') as f:
    f.write(b'half a record')
  os.remove(f'{copy}/manifest.json')
  caplog.set_level('INFO')
  pseudo_label.label(workdir, 'fashion_mnist', SPLIT, None, copy, num_shards=3, per_class=40,
                     min_threshold=0.2)
  assert "1 of this host's 3 shards to do" in caplog.text  # the finished ones are kept
  after = file_bytes(copy)
  assert after == before  # the temporary file replaced; every byte as uninterrupted
  # Reselection alone: other flags, no shard relabelled.
  caplog.clear()
  manifest = pseudo_label.label(workdir, 'fashion_mnist', SPLIT, None, copy, num_shards=3)
  assert "0 of this host's 3 shards to do" in caplog.text
  assert manifest['selection']['per_class'] is None
  assert {k: v for k, v in file_bytes(copy).items() if k.startswith('shards/')} == {
      k: v for k, v in before.items() if k.startswith('shards/')}


def test_another_teacher_or_data_is_refused_in_one_line(labelled, tmp_path):
  workdir, out, _ = labelled
  before = file_bytes(out)
  result = run_command('rs.pseudo_label', f'--teacher={workdir}', '--data=fashion_mnist',
                       '--split=test[:200]', f'--out={out}', '--num_shards=3')
  assert result.status == 1 and 'Traceback' not in result.stderr
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f'error: --out={out} holds pseudo-labels of another unlabeled data')
  assert file_bytes(out) == before
  empty = tmp_path / 'empty'
  empty.mkdir()
  result = run_command('rs.pseudo_label', f'--teacher={workdir}', '--data=folder',
                       f'--data_dir={empty}', f'--out={tmp_path}/pl')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: no .jpg/.jpeg/.png/.bmp/.gif files under {empty}')
  assert not os.path.exists(f'{tmp_path}/pl')
  result = run_command('rs.pseudo_label', f'--teacher={workdir}', '--data=imagenet2013',
                       '--split=train', f'--out={tmp_path}/pl')
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --data='imagenet2013': no such tfds dataset (registered, or prepared in the "
      'default data_dir); did you mean imagenet2012')
  assert not os.path.exists(f'{tmp_path}/pl')


def save_random_teacher(directory: str, config, num_classes: int, channels: int,
                        class_names=None) -> str:
  """A weights directory of `config`'s network with random weights of realistic statistics
  (test_predict.random_variables): a teacher without training one."""
  from test_predict import random_variables
  description = weights.describe(config, num_classes, channels, class_names)
  model = description.build()
  size = config.data.image_size
  x = np.random.default_rng(0).normal(size=(4, size, size, channels)).astype(np.float32)
  weights.save(directory, random_variables(model, x), description)
  return directory


@pytest.fixture(scope='module')
def photo_teacher(tmp_path_factory):
  """An RGB network with the official center-crop evaluation (random weights, realistic
  statistics), saved as a weights directory, and a folder of photographs with one bad file."""
  pytest.importorskip('skimage.data')
  from test_sources_e2e import rs_config
  from rs.tools import photo_dataset
  root = tmp_path_factory.mktemp('photo_teacher')
  config = rs_config(name='folder', data_dir=str(root))
  config.dtype = 'float32'
  # Named as the class folders number them (sorted), like a teacher trained on them.
  save_random_teacher(str(root / 'teacher'), config, 3, 3, sorted(photo_dataset.PHOTOS[:3]))
  photo_dataset.write_folder(str(root / 'photos'), 'train',
                             photo_dataset.examples(3, 2, size=(100, 75)))
  photo_dataset.write_folder(str(root / 'labeled'), 'train',
                             photo_dataset.examples(3, 6, size=(100, 75), seed=2))
  photo_dataset.write_folder(str(root / 'labeled'), 'validation',
                             photo_dataset.examples(3, 2, size=(100, 75), seed=3))
  (root / 'photos' / 'train' / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  return str(root / 'teacher'), str(root / 'photos')


def test_folder_and_tfrecord_sources_give_rs_predicts_probabilities(photo_teacher, tmp_path):
  from rs import predict
  teacher, photos = photo_teacher
  manifest = pseudo_label.label(teacher, 'folder', 'train', photos, str(tmp_path / 'folder'),
                                num_shards=2, top_k=2, batch_size=8)
  assert manifest['examples'] == 6 and manifest['undecodable'] == 1  # left out, counted
  rows = read_records(str(tmp_path / 'folder'))
  predictor = predict.Predictor(teacher)
  by_file = {}
  for row in rows.values():
    # The teacher's official eval crop, as rs.predict reads the file.
    expected = predictor.probabilities(predictor.prepare.read(row['key'])[None])[0]
    np.testing.assert_allclose(row['probabilities'], np.sort(expected)[::-1][:2], atol=2e-5)
    assert row['rest'] == pytest.approx(1 - np.sort(expected)[::-1][:2].sum(), abs=1e-5)
    assert open(row['key'], 'rb').read() == row['encoded']
    by_file[row['encoded']] = row['probabilities']
  # The same images as TFRecord files of tf.train.Examples ('image/encoded'): a shard per file.
  encoded = sorted(by_file)
  for f in range(2):
    with tf.io.TFRecordWriter(str(tmp_path / f'unlabeled-{f}.tfrecord')) as writer:
      for image in encoded[f::2]:
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
        })).SerializeToString())
  manifest = pseudo_label.label(teacher, 'tfrecord', None, str(tmp_path / 'unlabeled-*'),
                                str(tmp_path / 'records'), top_k=2, batch_size=8)
  assert manifest['num_shards'] == 2 and manifest['examples'] == 6
  rows = read_records(str(tmp_path / 'records'))
  assert sorted(rows) == [0, 1, 2, 2**32, 2**32 + 1, 2**32 + 2]  # file << 32 | record
  for row in rows.values():
    np.testing.assert_allclose(row['probabilities'], by_file[row['encoded']], atol=1e-6)
    assert row['key'].endswith(('.tfrecord[0]', '.tfrecord[1]', '.tfrecord[2]'))


def test_a_process_killed_after_a_shard_finishes_the_rest_to_the_same_files(labelled, tmp_path):
  """kill -9 of the command once its first shard is written; the same command again labels
  only what is left, and every file equals the uninterrupted labelling's."""
  import signal
  import subprocess
  import sys
  from conftest import ROOT, process_env
  workdir, reference, _ = labelled
  out = str(tmp_path / 'killed')
  command = [sys.executable, '-m', 'rs.pseudo_label', f'--teacher={workdir}',
             '--data=fashion_mnist', f'--split={SPLIT}', f'--out={out}', '--num_shards=3',
             '--per_class=40', '--min_threshold=0.2']
  env = process_env(devices=8)  # the reference's devices and batch: the same programs
  process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  for line in process.stderr:
    if 'Shard 0 done' in line:
      process.send_signal(signal.SIGKILL)
      break
  process.wait(timeout=300)
  assert process.returncode == -signal.SIGKILL
  assert not os.path.exists(f'{out}/manifest.json')
  again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  left = int(again.stderr.split(" of this host's 3 shards to do")[0].split()[-1])
  assert left < 3  # shard 0, at least, was not labelled again
  assert file_bytes(out) == file_bytes(reference)


# The student: pseudo-labeled rows mixed into its batches (config data.pseudo, rs.data.pseudo).

def student_config(out, **pseudo):
  from conftest import tiny_config
  config = tiny_config()
  config.data.pseudo.update({'dir': out, **pseudo})
  return config


def final_state(workdir):
  from rs import checkpoint
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 1)
  state = ckpt.restore()
  ckpt.close()
  return state


def test_a_ratio_of_zero_trains_exactly_as_without_pseudo_labels(labelled, tiny_run, tmp_path):
  from rs import train
  _, out, _ = labelled
  train.train_and_evaluate(student_config(out, ratio=0.0), str(tmp_path / 'run'))
  for mine, theirs in zip(*(jax_leaves(final_state(w)) for w in (str(tmp_path / 'run'),
                                                                 tiny_run[0]))):
    np.testing.assert_array_equal(mine, theirs)


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_the_mixed_loss_against_numpy():
  """Labeled rows: smoothed cross entropy; pseudo-labeled rows: cross entropy against the
  teacher's top-k (the rest spread evenly) at temperature T, weighted by the ratio."""
  import ml_collections
  from rs import step
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  batch = {'label': np.array([0, 3, 1, 2, 4, 0], np.int32),
           'pseudo': np.array([0, 0, 0, 1, 1, 1], np.float32),
           'pseudo_classes': np.array([[0, 0]] * 3 + [[2, 1], [4, 0], [0, 3]], np.int32),
           'pseudo_probs': np.array([[0, 0]] * 3 + [[0.6, 0.3], [0.5, 0.25], [0.9, 0.05]],
                                    np.float32),
           'pseudo_rest': np.array([0, 0, 0, 0.1, 0.25, 0.05], np.float32)}
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  smooth = np.full((3, 5), 0.1 / 5) + 0.9 * np.eye(5)[batch['label'][:3]]
  labeled = -(smooth * log_p[:3]).sum(-1).mean()
  for targets, temperature in (('soft', 1.0), ('soft', 0.5), ('hard', 1.0)):
    config = ml_collections.ConfigDict({'label_smoothing': 0.1, 'data': {'pseudo': {
        'targets': targets, 'temperature': temperature, 'ratio': 1.0, 'loss_weight': None}}})
    if targets == 'soft':
      q = np.zeros((3, 5))
      for r in range(3):
        q[r] = batch['pseudo_rest'][3 + r] / 3  # spread over the 3 classes outside the top 2
        q[r, batch['pseudo_classes'][3 + r]] = batch['pseudo_probs'][3 + r]
      q = q ** (1 / temperature)
      q /= q.sum(-1, keepdims=True)
    else:
      q = np.full((3, 5), 0.1 / 5) + 0.9 * np.eye(5)[batch['label'][3:]]
    taught = -(q * log_p[3:]).sum(-1).mean()
    loss, parts = step.mixed_loss(logits, batch, config)
    np.testing.assert_allclose(parts['labeled_loss'], labeled, rtol=1e-5)
    np.testing.assert_allclose(parts['pseudo_loss'], taught, rtol=1e-5)
    np.testing.assert_allclose(loss, labeled + taught, rtol=1e-5)  # weight = ratio = 1
    config.data.pseudo.loss_weight = 0.25
    np.testing.assert_allclose(step.mixed_loss(logits, batch, config)[0],
                               labeled + 0.25 * taught, rtol=1e-5)


def test_each_device_holds_its_share_of_both_kinds_and_batches_resume(labelled):
  from rs.data import pipeline
  _, out, _ = labelled
  config = student_config(out, ratio=2.0)  # 32 labeled + 64 pseudo-labeled rows per step
  mixed = pipeline.create_pipeline(config, local_devices=4)
  batch = next(mixed.train_iter(0))
  assert len(batch['label']) == 96 and batch['image'].shape[1:] == (24, 24, 1)
  # Device d's 24 rows: its 8 labeled rows, then its 16 pseudo-labeled ones.
  np.testing.assert_array_equal(batch['pseudo'].reshape(4, 24),
                                np.tile(np.repeat([0.0, 1.0], [8, 16]), (4, 1)))
  assert (batch['pseudo_rest'][batch['pseudo'] == 0] == 0).all()
  # The teacher's argmax is the pseudo-labeled rows' label; their targets sum to one.
  rows = batch['pseudo'] == 1
  np.testing.assert_array_equal(batch['label'][rows], batch['pseudo_classes'][rows][:, 0])
  np.testing.assert_allclose(batch['pseudo_probs'][rows].sum(-1) + batch['pseudo_rest'][rows],
                             1, atol=1e-5)
  # A resumed run's step 7 is an uninterrupted run's step 7.
  iterator = mixed.train_iter(0)
  seventh = [next(iterator) for _ in range(8)][7]
  again = next(mixed.train_iter(7))
  for key in seventh:
    np.testing.assert_array_equal(seventh[key], again[key])
  assert mixed.steps_per_epoch == 3_200 / 32  # epochs count the labeled set


def test_a_student_trains_on_both_and_resumes_exactly(labelled, tmp_path):
  from rs import train
  _, out, _ = labelled
  config = student_config(out, ratio=1.0, targets='soft', temperature=0.5)
  workdir = str(tmp_path / 'student')
  result = train.train_and_evaluate(config, workdir)
  assert np.isfinite(result['loss'])
  shutil.copytree(workdir, str(tmp_path / 'resumed'))
  shutil.rmtree(str(tmp_path / 'resumed' / 'checkpoints' / '6'))  # killed after step 3's save
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for mine, theirs in zip(jax_leaves(final_state(workdir)),
                          jax_leaves(final_state(str(tmp_path / 'resumed')))):
    np.testing.assert_array_equal(mine, theirs)
  from rs import metrics
  assert set(metrics.read_scalars(workdir, 'train/pseudo_loss'))  # logged to TensorBoard
  assert metrics.read_scalars(workdir, 'train/teacher_agreement')


@pytest.mark.parametrize('change,fragment', [
    ({'ratio': 0.1}, 'ratio x batch_size=32 is 3.2 images per step'),
    ({'ratio': 1.0, 'dir': None}, 'data.pseudo.dir=None: set --config.data.pseudo.dir'),
    ({'ratio': 1.0, 'targets': 'fuzzy'}, "data.pseudo.targets='fuzzy'"),
    ({'ratio': 1.0, 'temperature': 0.0}, 'give a temperature above 0'),
    ({'ratio': 1.0, 'fingerprint': 'abc'}, 'the config pins abc (data.pseudo.fingerprint)'),
    ({'ratio': 1.0, 'dir': '{empty}'}, 'holds no manifest.json'),
])
def test_a_student_config_that_cannot_work_is_one_line(labelled, tmp_path, change, fragment):
  from rs import train, validate
  _, out, _ = labelled
  (tmp_path / 'empty').mkdir()
  change = {k: str(tmp_path / 'empty') if v == '{empty}' else v for k, v in change.items()}
  with pytest.raises(validate.ConfigError, match=re.escape(fragment)):
    train.train_and_evaluate(student_config(out, **change), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_pseudo_labels_of_other_classes_are_refused(photo_teacher, labelled, tmp_path):
  """A 3-class teacher's labels for the 10-class Fashion-MNIST student."""
  from rs import train, validate
  teacher, photos = photo_teacher
  out = str(tmp_path / 'photos')
  pseudo_label.label(teacher, 'folder', 'train', photos, out, batch_size=8)
  with pytest.raises(validate.ConfigError, match='its teacher has 3 classes, the dataset 10'):
    train.train_and_evaluate(student_config(out, ratio=1.0), str(tmp_path / 'run'))


def test_a_streamed_student_mixes_the_pseudo_set_into_its_recipe(photo_teacher, tmp_path):
  """Class folders streamed with the RS recipe (inception crop, RandAugment), the photographs'
  pseudo-labels streamed alongside with the same recipe; batches resume exactly; it trains."""
  from rs import train
  from rs.data import pipeline
  from test_sources_e2e import rs_config
  teacher, photos = photo_teacher
  out = str(tmp_path / 'pseudo')
  pseudo_label.label(teacher, 'folder', None, photos, out, batch_size=8, per_class=20)
  config = rs_config(name='folder', data_dir=os.path.join(os.path.dirname(photos), 'labeled'))
  config.data.pseudo.update({'dir': out, 'ratio': 1.0})
  mixed = pipeline.create_pipeline(config, local_devices=8)
  batches = mixed.train_iter(0)
  first, second, third = next(batches), next(batches), next(batches)
  assert first['image'].shape == (32, 32, 32, 3)  # 16 labeled + 16 pseudo-labeled rows
  np.testing.assert_array_equal(first['pseudo'].reshape(8, 4),
                                np.tile([0.0, 0.0, 1.0, 1.0], (8, 1)))
  rows = first['pseudo'] == 1
  np.testing.assert_array_equal(first['label'][rows], first['pseudo_classes'][rows][:, 0])
  resumed = next(mixed.train_iter(2))
  for key in third:
    np.testing.assert_array_equal(third[key], resumed[key])
  assert not np.array_equal(first['image'], second['image'])
  result = train.train_and_evaluate(config, str(tmp_path / 'student'))
  assert np.isfinite(result['loss']) and result['num_examples'] == 6


def test_each_host_streams_its_own_shards_with_their_copies(photo_teacher, tmp_path):
  from rs.data import pseudo as pseudo_lib
  teacher, photos = photo_teacher
  out = str(tmp_path / 'pseudo')
  pseudo_label.label(teacher, 'folder', None, photos, out, num_shards=3, batch_size=8,
                     per_class=5)
  pseudo_set = pseudo_lib.PseudoSet(out)
  source = pseudo_lib.PseudoRecords(pseudo_set, 3, None)
  copies = pseudo_set.copies_per_shard()
  seen = []
  for host in range(2):
    records = list(source.records('pseudo', host, 2).as_numpy_iterator())
    targets = source.targets(host, 2)
    assert len(records) == source.num_examples('pseudo', host, 2)
    shards = [i for i in range(3) if i % 2 == host]
    assert len(records) == sum(copies[i].sum() for i in shards)
    for record in records:  # the row's targets are the teacher's for that image
      row = record['label']
      assert targets.label[row] == targets.classes[row][0]
      seen.append(record['path'])
  assert len(seen) == pseudo_set.selected


def test_noisy_student_rounds_end_to_end_and_resume(tmp_path, caplog):
  """The k-round tool on the tiny config: teacher, two students (the second taught by the
  first), each round's pseudo-labels made by the round before; run again, nothing retrains."""
  from conftest import tiny_config
  from rs.tools import noisy_student
  out = str(tmp_path / 'rounds')
  run = lambda: noisy_student.run_rounds(tiny_config(), out, 'fashion_mnist', 'test[:300]', 2,
                                         min_threshold=0.0, num_shards=2)
  results = run()
  assert [r['round'] for r in results] == [0, 1, 2]
  for r in (1, 2):
    manifest = json.load(open(f'{out}/pseudo{r}/manifest.json'))
    assert manifest['teacher']['path'] == f'{out}/round{r - 1}'  # taught by the round before
    assert manifest['examples'] == 300 == results[r]['selected']  # min_threshold 0: all kept
    config = json.load(open(f'{out}/round{r}/config.json'))
    assert config['data']['pseudo'] == config['data']['pseudo'] | {'dir': f'{out}/pseudo{r}',
                                                                  'ratio': 1.0}
  assert json.load(open(f'{out}/round0/config.json'))['data']['pseudo']['ratio'] == 0.0
  assert all(np.isfinite(r['loss']) for r in results)
  first = json.load(open(f'{out}/rounds.json'))
  caplog.set_level('INFO')
  again = run()  # finished runs report their evaluation; finished shards are kept
  assert "0 of this host's 2 shards to do" in caplog.text
  assert [r['top1'] for r in again] == [r['top1'] for r in first]


def test_calibration_against_the_hidden_labels(labelled, tmp_path):
  from rs.tools import pseudo_calibration
  _, out, _ = labelled
  result = pseudo_calibration.calibration(out, bins=5)
  truth = sources.load_array_split('fashion_mnist', SPLIT).labels
  rows = read_records(out)
  right = np.array([rows[i]['label'] == truth[i] for i in range(300)])
  assert result['accuracy'] == pytest.approx(right.mean())
  confidence = np.array([rows[i]['confidence'] for i in range(300)])
  for b in result['bins']:
    inside = (confidence >= b['from']) & ((confidence < b['to']) | (b['to'] == 1.0))
    assert b['count'] == inside.sum()
    if b['count']:
      assert b['accuracy'] == pytest.approx(right[inside].mean())
  copies = np.concatenate([np.load(f'{out}/selection/part-{i:05d}-of-00003.npy')
                           for i in range(3)])
  assert result['selected_accuracy'] == pytest.approx((right * copies).sum() / copies.sum())
  pseudo_calibration.plot(result, str(tmp_path / 'calibration.png'))
  assert (tmp_path / 'calibration.png').read_bytes()[:4] == b'\x89PNG'
