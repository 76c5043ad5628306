"""Pseudo-labels from a teacher, Noisy Student's way (paper section 7.3):

  python -m rs.pseudo_label --teacher=WEIGHTS --data=NAME [--split=S] [--data_dir=D] --out=DIR

WEIGHTS is any weights directory (rs.export's, rs.convert's) or a run directory (its newest
checkpoint's EMA weights). The teacher runs in inference mode with its own evaluation input
(model.json: resolution, crop, channels, normalisation) on this host's devices. The unlabeled
images come from any source rs reads, labels ignored (rs.data.unlabeled): a tfds split, an
in-memory dataset (fashion_mnist), a folder of images (class folders or flat), TFRecord files.

The source is cut into fixed shards (--num_shards; one per TFRecord file). Each host labels
the shards i with i % hosts == its index, on its own devices, with no collectives, and writes
each shard as it finishes it:

  DIR/labelling.json               what is being labelled: teacher, data, shards, top-k
  DIR/shards/part-00003-of-00016.tfrecord   one tf.train.Example per decodable image:
      id (int64), key (bytes), image/encoded (the image file's bytes), label (argmax),
      confidence (its probability), classes + probabilities (the top-k, most probable
      first; all classes when --top_k=0), rest (the probability outside them)
  DIR/shards/part-00003-of-00016.npz     ids, labels, confidences, and the targets (classes,
      probabilities, rest): what selection, stats and a streaming student read
  DIR/shards/part-00003-of-00016.json    written last: the shard is complete
  DIR/selection/part-00003-of-00016.npy  copies of each example the student trains on
  DIR/manifest.json                counts per class, confidence histogram, selection

A killed run started again skips its complete shards and redoes the others whole; a shard's
content depends only on the teacher and the source, so the result equals an uninterrupted
run's. Undecodable images are left out and counted, as in training (data.bad_images='skip').

Selection (Noisy Student's filter_unlabel): each image belongs to its argmax class. A class's
confidence threshold walks down from 1.00 in steps of 0.01 until the class holds --per_class
images or --min_threshold is reached; every image at or above it is kept, and its copies are
per_class / kept (rounded stochastically, seeded by --seed and the shard): rare classes are
duplicated, common ones down-sampled. Without --per_class only the threshold applies.
Rerunning the command on a finished DIR with other selection flags only reselects.
"""
import dataclasses
import hashlib
import io
import json
import logging
import time

import jax
import numpy as np
from absl import app, flags
from etils import epath

from rs import checkpoint, cli, distributed, export, metrics, rundir, sharding
from rs import step as step_lib
from rs import validate
from rs import weights as weights_lib
from rs.data import pseudo
from rs.data.eval_input import EvalInput
from rs.errors import UserError

VERSION = 1
HISTOGRAM_BINS = 100  # confidence in steps of 0.01, the selection's threshold grid


class PseudoLabelError(UserError, ValueError):
  """An output directory or teacher that cannot be used; the message says why and the fix."""


@dataclasses.dataclass
class Teacher:
  variables: dict
  description: weights_lib.Description
  fingerprint: str
  path: str


def load_teacher(path: str, device_sharding) -> Teacher:
  """A weights directory, or a run directory's newest EMA weights, on `device_sharding`."""
  directory = rundir.path(path)
  if (directory / 'variables').exists():
    variables, description = weights_lib.load(path, device_sharding)
  elif (directory / 'config.json').exists():
    variables, description = export.run_weights(path, 'ema', tool='rs.pseudo_label')
    variables = jax.device_put(variables, device_sharding)
  else:
    raise PseudoLabelError(f'--teacher={path}: neither a weights directory (model.json and '
                           'variables, from rs.export or rs.convert) nor a run directory')
  arrays = checkpoint.fingerprint(variables)
  network = {k: v for k, v in description.to_json().items() if k != 'source'}
  digest = hashlib.sha256(json.dumps([network, sorted(arrays.items())], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]
  return Teacher(variables, description, digest, str(path))


def teacher_input(spec: EvalInput, bad):
  """tf.data map: an unlabeled example -> + 'image' (float32 S x S x C, the teacher's
  evaluation input) and 'ok' (False for an undecodable image, whose 'image' is zeros); `bad`
  (rs.data.bad_images.BadImages) logs and screens undecodable files."""
  import tensorflow as tf
  from rs.data import tf_preprocess
  shape = (spec.image_size, spec.image_size, spec.channels)

  def from_pixels(pixels):  # in-memory arrays, as rs.data.preprocess.resize resizes them
    if pixels.shape[-1] != spec.channels:
      pixels = (tf_preprocess.grayscale(pixels) if spec.channels == 1
                else tf.repeat(pixels, spec.channels, axis=-1))
    image = tf.image.resize(pixels, shape[:2], method='bilinear', antialias=True)
    return tf.clip_by_value(tf.round(image), 0, 255)

  def from_bytes(encoded):
    if spec.method == 'center_crop':
      image = tf_preprocess.eval_image_from_bytes(encoded, spec.image_size, spec.crop_padding,
                                                  spec.crop_fraction)
      return tf_preprocess.grayscale(image) if spec.channels == 1 else image
    image = tf.py_function(lambda b: spec(b.numpy()), [encoded], tf.float32)  # EvalInput's
    return tf.ensure_shape(image, shape)

  def prepare(example):
    if 'pixels' in example and spec.method == 'resize':
      ok, image = tf.constant(True), from_pixels(example.pop('pixels'))
    else:
      example.pop('pixels', None)
      ok = bad.check(example['encoded'], example['key'])
      image = tf.cond(ok, lambda: from_bytes(example['encoded']), lambda: tf.zeros(shape))
    return example | {'image': tf.cast(image, tf.float32), 'ok': ok}

  return prepare


def _write_text(path: epath.Path, text: str) -> None:
  """`path` holds `text` whole or not at all (written aside, then renamed over it): a run
  killed meanwhile leaves no half file behind."""
  aside = path.parent / f'{path.name}.writing'
  aside.write_text(text)
  aside.replace(path)


def _example(row: dict, top_k: int):
  """One tf.train.Example of a labelled image."""
  import tensorflow as tf
  probabilities = row['probabilities']
  order = np.argsort(-probabilities, kind='stable')[:top_k or len(probabilities)]
  top = probabilities[order]
  feature = lambda **kw: tf.train.Feature(**kw)
  ints = lambda v: feature(int64_list=tf.train.Int64List(value=v))
  floats = lambda v: feature(float_list=tf.train.FloatList(value=v))
  return tf.train.Example(features=tf.train.Features(feature={
      'id': ints([row['id']]),
      'key': feature(bytes_list=tf.train.BytesList(value=[row['key']])),
      'image/encoded': feature(bytes_list=tf.train.BytesList(value=[row['encoded']])),
      'label': ints([int(order[0])]),
      'confidence': floats([float(top[0])]),
      'classes': ints(order.tolist()),
      'probabilities': floats(top.tolist()),
      'rest': floats([max(0.0, 1.0 - float(top.astype(np.float64).sum()))]),
  }))


class Labeller:
  """The teacher's forward on this host's devices, and the writing of whole shards."""

  def __init__(self, teacher: Teacher, mesh, batch_size: int, top_k: int):
    self.teacher, self.mesh, self.batch_size, self.top_k = teacher, mesh, batch_size, top_k
    spec = teacher.description.input
    model = teacher.description.build()
    self.batch_sharding = sharding.batch_sharded(mesh)
    self._forward = jax.jit(lambda v, images: jax.nn.softmax(
        step_lib.logits(model, v, images, spec.mean, spec.std).astype(np.float32)))
    from rs.data import bad_images  # TensorFlow: imported when the command runs
    self.bad = bad_images.BadImages('skip')

  def batches(self, dataset):
    """(numpy batch, device probabilities) pairs, the next batch's forward dispatched before
    the previous one's results are read (the device works while the host writes)."""
    import tensorflow as tf
    ds = (dataset.map(teacher_input(self.teacher.description.input, self.bad),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors().batch(self.batch_size).prefetch(2))
    pending = None
    for batch in ds.as_numpy_iterator():
      images = batch.pop('image')
      count = len(images)
      padded = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
      padded[:count] = images
      probabilities = self._forward(self.teacher.variables,
                                    jax.device_put(padded, self.batch_sharding))
      if pending is not None:
        yield pending
      pending = (batch, probabilities, count)
    if pending is not None:
      yield pending

  def label_shard(self, source, index: int, directory: epath.Path, progress) -> dict:
    """Labels shard `index` and writes it (records, arrays, then the completion file)."""
    import tensorflow as tf
    name = pseudo.shard_name(index, len(source.ranges))
    start = time.monotonic()
    ids, labels, confidences, targets = [], [], [], []
    seen = undecodable = 0
    temporary = directory / f'{name}.tfrecord.writing'
    with tf.io.TFRecordWriter(str(temporary)) as writer:
      for batch, probabilities, count in self.batches(source.shard(index)):
        probabilities = np.asarray(probabilities)[:count]
        for i in range(count):
          if not batch['ok'][i]:
            undecodable += 1
            continue
          row = {k: batch[k][i] for k in ('id', 'key', 'encoded')}
          row['probabilities'] = probabilities[i]
          example = _example(row, self.top_k)
          writer.write(example.SerializeToString(deterministic=True))
          f = example.features.feature
          targets.append((f['classes'].int64_list.value, f['probabilities'].float_list.value,
                          f['rest'].float_list.value[0]))
          ids.append(row['id'])
          labels.append(int(np.argmax(probabilities[i])))
          confidences.append(float(probabilities[i].max()))
        seen += count
        progress(count)
    expected = source.shard_size(index)
    if expected is not None:  # images that failed even after the byte test
      undecodable = expected - len(ids)
    tf.io.gfile.rename(str(temporary), str(directory / f'{name}.tfrecord'), overwrite=True)
    buffer = io.BytesIO()
    k = min(self.top_k or self.teacher.description.num_classes,
            self.teacher.description.num_classes)
    np.savez(buffer, ids=np.asarray(ids, np.int64), labels=np.asarray(labels, np.int32),
             confidences=np.asarray(confidences, np.float32),
             classes=np.asarray([t[0] for t in targets], np.int32).reshape(-1, k),
             probabilities=np.asarray([t[1] for t in targets], np.float32).reshape(-1, k),
             rest=np.asarray([t[2] for t in targets], np.float32))
    (directory / f'{name}.npz').write_bytes(buffer.getvalue())
    stats = {'shard': index, 'examples': len(ids), 'undecodable': int(undecodable)}
    _write_text(directory / f'{name}.json', json.dumps(stats))  # no timings: files are data
    return stats | {'seconds': time.monotonic() - start}


def _check_same_labelling(out: epath.Path, identity: dict) -> None:
  saved = json.loads((out / 'labelling.json').read_text())
  for key, what in (('teacher', 'teacher'), ('data', 'unlabeled data'),
                    ('num_shards', 'shard count'), ('top_k', '--top_k')):
    mine, theirs = identity[key], saved.get(key)
    if key in ('teacher', 'data'):
      mine, theirs = mine['fingerprint'], (theirs or {}).get('fingerprint')
    if mine != theirs:
      raise PseudoLabelError(
          f'--out={out} holds pseudo-labels of another {what} ({theirs!r}, this run '
          f'{mine!r}): give a new --out, or the flags that made it to finish or reselect it')


def label(teacher_path: str, data: str, split: str | None, data_dir: str | None, out: str,
          manual_dir: str | None = None, num_shards: int = 16, top_k: int = 0,
          batch_size: int | None = None, per_class: int | None = None,
          min_threshold: float = 0.3, seed: int = 0) -> dict:
  """Labels every shard of this host that is not complete yet, then (process 0) writes the
  selection and DIR/manifest.json; returns the manifest, on every host."""
  if top_k < 0 or num_shards < 1:
    raise PseudoLabelError(f'--top_k={top_k}, --num_shards={num_shards}: give --top_k >= 0 '
                           '(0: every class) and --num_shards >= 1')
  if batch_size is not None and batch_size < 1:
    raise PseudoLabelError(f'--batch_size={batch_size}: give 1 or more')
  _check_selection_flags(per_class, min_threshold)
  validate.check_writable(out, '--out')
  mesh = sharding.create_mesh(jax.local_devices())
  batch_size = batch_size or 32 * mesh.size
  sharding.check_batch_size('batch_size', batch_size, mesh, '--batch_size')
  teacher = load_teacher(teacher_path, sharding.replicated(mesh))
  from rs.data import sources, unlabeled  # TensorFlow: imported when the command runs
  if data not in ('folder', 'tfrecord', *sources.ARRAY_DATASETS):
    validate.check_tfds_name(data, data_dir, '--data', "'folder', 'tfrecord' or "
                             "'fashion_mnist'")
  source = unlabeled.open_unlabeled(data, split, data_dir, manual_dir, num_shards)
  description = teacher.description
  identity = {
      'version': VERSION,
      'teacher': {'path': str(teacher_path), 'fingerprint': teacher.fingerprint,
                  'model': description.model, 'num_classes': description.num_classes,
                  'class_names': description.class_names, 'input': description.input.to_json()},
      'data': {'name': data, 'split': split, 'data_dir': data_dir,
               'fingerprint': source.fingerprint, 'description': source.description},
      'num_shards': len(source.ranges), 'top_k': top_k}
  out_path = rundir.path(out)
  shards_dir = out_path / 'shards'
  if (out_path / 'labelling.json').exists():
    _check_same_labelling(out_path, identity)
  elif jax.process_index() == 0:
    shards_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_path / 'labelling.json', json.dumps(identity, indent=1))
  shards_dir.mkdir(parents=True, exist_ok=True)

  count = len(source.ranges)
  mine = [i for i in range(count) if i % jax.process_count() == jax.process_index()]
  todo = [i for i in mine if not (shards_dir / f'{pseudo.shard_name(i, count)}.json').exists()]
  logging.info('Labelling %s with %s (%s, %d classes) on %d devices: %d of this host\'s %d '
               'shards to do.', source.description, teacher_path, description.model,
               description.num_classes, mesh.size, len(todo), len(mine))
  if todo:
    labeller = Labeller(teacher, mesh, batch_size, top_k)
    sizes = [source.shard_size(i) for i in todo]
    progress = _Progress(sum(sizes) if None not in sizes else None, len(todo))
    for index in todo:
      stats = labeller.label_shard(source, index, shards_dir, progress)
      progress.shard_done(index, stats)
  distributed.sync_hosts('rs.pseudo_label: every shard written')
  if jax.process_index() == 0:
    write_manifest(out, per_class, min_threshold, seed)
  # Every host returns once the manifest exists: a student started right after reads it.
  distributed.sync_hosts('rs.pseudo_label: the manifest written')
  return pseudo.PseudoSet(out).manifest


class _Progress:
  """images/s and ETA in the log, every ~10 s and per finished shard."""

  def __init__(self, total: int | None, shards: int):
    self.total, self.shards, self.done, self.shards_done = total, shards, 0, 0
    self.throughput = metrics.Throughput(total or 0, 1, 0)
    self.last = time.monotonic()

  def __call__(self, images: int) -> None:
    self.done += images
    if time.monotonic() - self.last >= 10:
      self._log()

  def shard_done(self, index: int, stats: dict) -> None:
    self.shards_done += 1
    logging.info('Shard %d done in %.1f s: %d images labelled, %d undecodable left out (%d of '
                 '%d shards).', index, stats['seconds'], stats['examples'], stats['undecodable'],
                 self.shards_done, self.shards)
    self._log()

  def _log(self) -> None:
    self.last = time.monotonic()
    rate = self.throughput(self.done)
    of = f'/{self.total:,}' if self.total else ''
    eta = (f", ETA {rate['eta_minutes']:.1f} min" if self.total and 'eta_minutes' in rate
           else '')
    logging.info('[label %s%s] %.0f images/s%s', f'{self.done:,}', of,
                 rate['images_per_sec'], eta)


def _check_selection_flags(per_class: int | None, min_threshold: float) -> None:
  if per_class is not None and per_class < 1:
    raise PseudoLabelError(f'--per_class={per_class}: give 1 or more (images per class after '
                           'balancing), or leave it unset to keep every image above the threshold')
  if not 0 <= min_threshold <= 1:
    raise PseudoLabelError(f'--min_threshold={min_threshold}: give a confidence in [0, 1] '
                           '(Noisy Student: 0.3)')


def select(labels: np.ndarray, confidences: np.ndarray, num_classes: int,
           per_class: int | None, min_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(each class's confidence threshold, each class's expected copies per kept image), by
  Noisy Student's rule (module docstring)."""
  grid = np.round(np.arange(100, round(min_threshold * 100) - 1, -1) / 100, 2)
  thresholds = np.full(num_classes, min_threshold)
  copies = np.ones(num_classes)
  for c in range(num_classes):
    mine = confidences[labels == c]
    if per_class is not None:
      for t in grid:
        if np.sum(mine >= t) >= per_class:
          thresholds[c] = t
          break
      kept = np.sum(mine >= thresholds[c])
      copies[c] = per_class / kept if kept else 0.0
  return thresholds, copies


def write_manifest(out: str, per_class: int | None = None, min_threshold: float = 0.3,
                   seed: int = 0) -> dict:
  """DIR/manifest.json and DIR/selection/ from the complete shards."""
  out_path = rundir.path(out)
  identity = json.loads((out_path / 'labelling.json').read_text())
  count, num_classes = identity['num_shards'], identity['teacher']['num_classes']
  stats = [json.loads((out_path / 'shards' / f'{pseudo.shard_name(i, count)}.json').read_text())
           for i in range(count)]
  arrays = [pseudo.read_arrays(out, i, count) for i in range(count)]
  labels = np.concatenate([a['labels'] for a in arrays])
  confidences = np.concatenate([a['confidences'] for a in arrays])
  thresholds, expected = select(labels, confidences, num_classes, per_class, min_threshold)
  selection_dir = out_path / 'selection'
  selection_dir.mkdir(parents=True, exist_ok=True)
  after = np.zeros(num_classes, np.int64)
  for i, a in enumerate(arrays):
    e = expected[a['labels']] * (a['confidences'] >= thresholds[a['labels']])
    draws = np.random.default_rng([seed, i]).random(len(e))
    copies = (np.floor(e) + (draws < e - np.floor(e))).astype(np.uint16)
    np.add.at(after, a['labels'], copies)
    buffer = io.BytesIO()
    np.save(buffer, copies)
    (selection_dir / f'{pseudo.shard_name(i, count)}.npy').write_bytes(buffer.getvalue())
  histogram = np.histogram(confidences, bins=HISTOGRAM_BINS, range=(0, 1))[0]
  manifest = identity | {
      'examples': int(len(labels)),
      'undecodable': int(sum(s['undecodable'] for s in stats)),
      'per_class': np.bincount(labels, minlength=num_classes).tolist(),
      'confidence_histogram': {'bins': HISTOGRAM_BINS, 'counts': histogram.tolist()},
      'shards': [{'file': f'shards/{pseudo.shard_name(s["shard"], count)}.tfrecord',
                  'examples': s['examples'], 'undecodable': s['undecodable']} for s in stats],
      'selection': {'per_class': per_class, 'min_threshold': min_threshold, 'seed': seed,
                    'thresholds': thresholds.tolist(), 'selected_per_class': after.tolist(),
                    'selected': int(after.sum())}}
  _write_text(out_path / 'manifest.json', json.dumps(manifest, indent=1))
  logging.info('Labelled %d images (%d undecodable left out); selected %d (threshold %s%s).',
               manifest['examples'], manifest['undecodable'], after.sum(), min_threshold,
               f', {per_class} per class' if per_class else '')
  return manifest


def define_source_flags():
  """The unlabeled images' flags (this command's, and rs.tools.noisy_student's)."""
  flags.DEFINE_string('data', None, "Unlabeled images: a tfds name, an in-memory dataset "
                      "(fashion_mnist), 'folder' or 'tfrecord'.")
  flags.DEFINE_string('split', None, "The split (tfds and in-memory: e.g. 'train[6000:]'; "
                      'folder: a sub-folder of --data_dir, optional).')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir; the folder of images; the TFRecord '
                      'files (a glob).')


def define_labelling_flags():
  """How the images are labelled and selected (this command's, and rs.tools.noisy_student's)."""
  flags.DEFINE_integer('num_shards', 16, 'Shards the source is cut into (the unit of work '
                       'and of resuming); TFRecord sources: one per file.')
  flags.DEFINE_integer('top_k', 0, 'Probabilities kept per image, the most probable first, '
                       'with the rest\'s mass; 0: every class.')
  flags.DEFINE_integer('per_class', None, 'Selection: images per class after balancing '
                       '(Noisy Student: 130,000); unset: no balancing.')
  flags.DEFINE_float('min_threshold', 0.3, 'Selection: the lowest confidence a class\'s '
                     'threshold may walk down to.')


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('teacher', None, 'A weights directory (rs.export, rs.convert) or a run '
                      "directory (its newest checkpoint's EMA weights).")
  define_source_flags()
  flags.DEFINE_string('manual_dir', None, 'Where the dataset\'s original files are (as '
                      'data.manual_dir).')
  flags.DEFINE_string('out', None, 'Directory for the pseudo-labels (local or gs://).')
  define_labelling_flags()
  flags.DEFINE_integer('batch_size', None, 'Images per forward on this host\'s devices; '
                       'default 32 per device.')
  flags.DEFINE_integer('seed', 0, 'Selection: the seed of the stochastic rounding of copies.')
  cli.define_distributed_flag()
  flags.mark_flags_as_required(['teacher', 'data', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  cli.start_jax(**cli.distributed_flags())  # each host labels its own shards
  manifest = label(f.teacher, f.data, f.split, f.data_dir, f.out, f.manual_dir, f.num_shards,
                   f.top_k, f.batch_size, f.per_class, f.min_threshold, f.seed)
  if manifest:
    selection = manifest['selection']
    print(f"Labelled {manifest['examples']:,} images of {manifest['data']['description']} "
          f"into {f.out} ({manifest['undecodable']} undecodable left out); "
          f"{selection['selected']:,} selected for the student.")


if __name__ == '__main__':
  define_flags()
  cli.run(main)
