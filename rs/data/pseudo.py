"""The pseudo-labeled images a student trains on (rs.pseudo_label's output), and the training
batches that mix them with the labeled ones (config data.pseudo, docs/semi_supervised.md).

`PseudoSet(dir)` reads the manifest; `load_arrays` holds the selected images in memory (each
repeated by its selection copies) with the teacher's targets, for the in-memory pipeline.
`MixedPipeline` wraps a labeled pipeline: each training batch is its labeled rows and
ratio x as many pseudo-labeled rows, both pure functions of (seed, step), arranged so that
every device holds its share of each (so BatchNorm's per-device statistics see both, as Noisy
Student's per-core batches did). Evaluation, class names and epochs are the labeled
pipeline's.
"""
import dataclasses
import io
import json
from typing import Iterator

import numpy as np
from etils import epath

from rs.data import in_memory, preprocess, sources
from rs.errors import UserError


def shard_name(index: int, count: int) -> str:
  """The files of shard `index` of `count`: NAME.tfrecord, .npz, .json (rs.pseudo_label)."""
  return f'part-{index:05d}-of-{count:05d}'


def read_arrays(directory: str, index: int, count: int) -> dict[str, np.ndarray]:
  """A complete shard's ids, labels, confidences and targets (classes, probabilities, rest),
  in record order."""
  path = epath.Path(directory) / 'shards' / f'{shard_name(index, count)}.npz'
  with np.load(io.BytesIO(path.read_bytes())) as arrays:
    return dict(arrays)


def pseudo_rows(config) -> int:
  """Pseudo-labeled images per global step: data.pseudo.ratio x batch_size (0 when off;
  configs from before data.pseudo have none)."""
  ratio = config.data.get('pseudo', {}).get('ratio') or 0
  return round(ratio * config.batch_size)


class PseudoLabelsError(UserError, ValueError):
  """A pseudo-label directory that cannot be used with this config; the message says why."""


@dataclasses.dataclass
class PseudoSet:
  """An rs.pseudo_label output directory, complete (its manifest written); errors name it as
  `field` (the config's, or a tool's flag)."""
  directory: str
  field: str = 'data.pseudo.dir'

  def __post_init__(self):
    path = epath.Path(self.directory) / 'manifest.json'
    if not path.exists():
      raise PseudoLabelsError(
          f'{self.field}={self.directory!r} holds no manifest.json: give a directory '
          'rs.pseudo_label finished (run it again to finish an interrupted one)')
    self.manifest = json.loads(path.read_text())
    self.num_classes = self.manifest['teacher']['num_classes']
    self.class_names = self.manifest['teacher'].get('class_names')
    self.num_shards = self.manifest['num_shards']
    self.selected = self.manifest['selection']['selected']

  def check(self, num_classes: int, class_names, fingerprint: str | None) -> None:
    """The teacher labeled the student's classes (count, and names where both are known), and
    the unlabeled data is the one the config pins (data.pseudo.fingerprint), if it does."""
    where = f'{self.field}={self.directory!r}'
    if self.num_classes != num_classes:
      raise PseudoLabelsError(f'{where}: its teacher has {self.num_classes} classes, the '
                              f'dataset {num_classes}: pseudo-label with a teacher of this '
                              'dataset\'s classes')
    if class_names and self.class_names and list(class_names) != list(self.class_names):
      differ = next(i for i, (a, b) in enumerate(zip(class_names, self.class_names)) if a != b)
      raise PseudoLabelsError(f'{where}: its teacher\'s class {differ} is '
                              f'{self.class_names[differ]!r}, the dataset\'s '
                              f'{class_names[differ]!r}: pseudo-labels of another dataset')
    data = self.manifest['data']['fingerprint']
    if fingerprint and fingerprint != data:
      raise PseudoLabelsError(f'{where}: its unlabeled data has fingerprint {data}, the config '
                              f'pins {fingerprint} (data.pseudo.fingerprint): another data set '
                              f'({self.manifest["data"]["description"]})')
    if not self.selected:
      raise PseudoLabelsError(f'{where}: its selection keeps no image (lower --min_threshold '
                              'in rs.pseudo_label)')

  def encoded_images(self):
    """tf.data.Dataset of every labelled example's image file bytes, in record order."""
    import tensorflow as tf
    files = [str(epath.Path(self.directory) / s['file']) for s in self.manifest['shards']]
    spec = {'image/encoded': tf.io.FixedLenFeature([], tf.string)}
    return tf.data.TFRecordDataset(files).map(
        lambda serialized: tf.io.parse_single_example(serialized, spec)['image/encoded'])

  def copies_per_shard(self) -> list[np.ndarray]:
    """The selection's copies of each shard's examples, in record order."""
    folder = epath.Path(self.directory) / 'selection'
    return [np.load(io.BytesIO((folder / f'{shard_name(i, self.num_shards)}.npy').read_bytes()))
            for i in range(self.num_shards)]

  def copies(self) -> np.ndarray:
    """The selection's copies of every example, in `records` order."""
    return np.concatenate(self.copies_per_shard())

  def arrays(self, shard: int) -> dict[str, np.ndarray]:
    return read_arrays(self.directory, shard, self.num_shards)

  def targets(self, shards) -> 'Targets':
    """The teacher's targets of every example of `shards`, in record order."""
    arrays = [self.arrays(i) for i in shards]
    join = lambda key: np.concatenate([a[key] for a in arrays])
    return Targets(join('labels'), join('classes'), join('probabilities'), join('rest'))


@dataclasses.dataclass
class Targets:
  """The teacher's targets of every selected row: top-k classes and probabilities, the rest of
  the mass, and the argmax ('label')."""
  label: np.ndarray  # int32 [N]
  classes: np.ndarray  # int32 [N, k]
  probabilities: np.ndarray  # float32 [N, k]
  rest: np.ndarray  # float32 [N]

  def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
    return {'label': self.label[index], 'pseudo_classes': self.classes[index],
            'pseudo_probs': self.probabilities[index], 'pseudo_rest': self.rest[index]}


class PseudoRecords:
  """The selected pseudo-labeled images as a streamed source (rs.data.streaming reads it as
  it reads tfds and folder sources): this host's shards (shard i % hosts == host), each
  record repeated by its selection copies. A record's 'label' is its row in this host's
  target table (`targets`), which holds only this host's share: a few numbers per image."""

  name = 'pseudo'

  def __init__(self, pseudo: PseudoSet, num_classes: int, class_names):
    self.pseudo, self.num_classes, self.class_names = pseudo, num_classes, class_names
    self._copies = pseudo.copies_per_shard()
    self._sizes = [s['examples'] for s in pseudo.manifest['shards']]

  def _shards(self, host: int, hosts: int) -> list[int]:
    return [i for i in range(self.pseudo.num_shards) if i % hosts == host]

  def num_examples(self, split: str, host: int = 0, hosts: int = 1) -> int:
    """Images (copies counted) in host `host`'s share, or in all with hosts=1."""
    del split  # one set
    return int(sum(self._copies[i].sum() for i in self._shards(host, hosts)))

  def names(self, split: str, host: int = 0, hosts: int = 1, order_seed=None) -> None:
    del split, host, hosts, order_seed  # a shuffle buffer mixes the files: not known

  def targets(self, host: int, hosts: int) -> 'Targets':
    """The teacher's targets of host `host`'s records, by row ('label' of `records`)."""
    return self.pseudo.targets(self._shards(host, hosts))

  def records(self, split: str, host: int = 0, hosts: int = 1, order_seed=None,
              shuffle_buffer: int = 16 * 1024, check=None):
    """Host `host`'s records, each `copies` times; files permuted and a seeded shuffle
    buffer with `order_seed` (rs.data.records' scheme)."""
    import tensorflow as tf
    from rs.data import records
    del split
    shards = self._shards(host, hosts)
    if not shards:
      raise PseudoLabelsError(f'{self.pseudo.directory} has {self.pseudo.num_shards} shards, '
                              f'fewer than the {hosts} hosts: pseudo-label with --num_shards '
                              f'of at least {hosts}')
    offsets = np.cumsum([0] + [self._sizes[i] for i in shards])[:-1]
    copies = tf.constant(np.concatenate([self._copies[i] for i in shards]).astype(np.int64))
    files = [str(epath.Path(self.pseudo.directory) / self.pseudo.manifest['shards'][i]['file'])
             for i in shards]
    files, offsets = records.permute((tf.constant(files), tf.constant(offsets, tf.int64)),
                                     order_seed)

    def piece(file, offset):  # (row in this host's table, serialized example)
      return tf.data.TFRecordDataset(file).enumerate(offset)

    ds = tf.data.Dataset.from_tensor_slices((files, offsets)).interleave(
        piece, cycle_length=min(16, len(shards)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    ds = ds.flat_map(lambda row, serialized: tf.data.Dataset.from_tensors(
        (row, serialized)).repeat(copies[row]))
    if order_seed is not None:
      ds = ds.shuffle(shuffle_buffer, seed=records.seed_hash(order_seed))
    spec = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
            'key': tf.io.FixedLenFeature([], tf.string)}

    def parse(row, serialized):
      example = tf.io.parse_single_example(serialized, spec)
      record = {'image': example['image/encoded'], 'label': tf.cast(row, tf.int32),
                'path': example['key']}
      return record if check is None else record | {'ok': check(record['image'],
                                                                 record['path'])}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def load_arrays(pseudo: PseudoSet, image_size: int, channels: int
                ) -> tuple[np.ndarray, Targets]:
  """(uint8 images [N, S, S, channels], their Targets) of the selected examples, each repeated
  by its copies: the in-memory pipeline's pseudo-labeled set, resized as the labeled set is."""
  import tensorflow as tf
  copies = pseudo.copies()
  images = [preprocess.resize(tf.io.decode_image(encoded, channels=channels,
                                                 expand_animations=False).numpy()[None],
                              image_size)[0]
            for encoded, n in zip(pseudo.encoded_images().as_numpy_iterator(), copies) if n]
  rows = np.repeat(np.arange(len(copies)), copies.astype(np.int64))  # each row, copies times
  targets = pseudo.targets(range(pseudo.num_shards))
  targets = Targets(targets.label[rows], targets.classes[rows], targets.probabilities[rows],
                    targets.rest[rows])
  kept = np.repeat(np.arange(len(images)), copies[copies > 0].astype(np.int64))
  return np.stack(images)[kept], targets


@dataclasses.dataclass(eq=False)
class MixedPipeline:
  """A labeled pipeline with `pseudo` (an InMemoryPipeline whose 'label' is a row of
  `targets`) mixed into its training batches; everything else is the labeled pipeline's."""
  labeled: object
  pseudo: in_memory.InMemoryPipeline
  targets: Targets
  local_devices: int  # this host's devices in the mesh: its rows are split over them

  def __getattr__(self, name):  # num_classes, class_names, eval_iter, steps_per_epoch, ...
    return getattr(self.labeled, name)

  def train_iter(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of each step: per device, its labeled rows then its pseudo-labeled
    rows; 'pseudo' is 1.0 on the latter, which also carry the teacher's targets."""
    for labeled, pseudo in zip(self.labeled.train_iter(start_step),
                               self.pseudo.train_iter(start_step)):
      yield self.mix(labeled, pseudo)

  def mix(self, labeled: dict, pseudo: dict) -> dict[str, np.ndarray]:
    n, m = len(labeled['label']), len(pseudo['label'])
    k = self.targets.classes.shape[1]
    taught = self.targets.rows(pseudo['label'])
    parts = {
        'image': (labeled['image'], pseudo['image']),
        'label': (labeled['label'], taught['label']),
        'pseudo': (np.zeros(n, np.float32), np.ones(m, np.float32)),
        'pseudo_classes': (np.zeros((n, k), np.int32), taught['pseudo_classes']),
        'pseudo_probs': (np.zeros((n, k), np.float32), taught['pseudo_probs']),
        'pseudo_rest': (np.zeros(n, np.float32), taught['pseudo_rest'])}
    d = self.local_devices
    return {key: np.concatenate([piece for i in range(d) for piece in
                                 (a[i * n // d:(i + 1) * n // d], b[i * m // d:(i + 1) * m // d])])
            for key, (a, b) in parts.items()}


def mixed_in_memory(labeled: in_memory.InMemoryPipeline, config, local_devices: int,
                    rows: int) -> MixedPipeline:
  """`labeled` (the config's in-memory pipeline) with data.pseudo's set mixed in, `rows`
  pseudo-labeled images per global step, augmented as the labeled ones."""
  p = config.data.pseudo
  pseudo = PseudoSet(p.dir)
  pseudo.check(labeled.num_classes, labeled.class_names, p.get('fingerprint'))
  images, targets = load_arrays(pseudo, config.data.image_size, labeled.image_shape[-1])
  split = sources.ArraySplit(images, np.arange(len(images), dtype=np.int32), len(images))
  _check_enough(p, rows, len(split))
  stream = in_memory.InMemoryPipeline(split, split, rows, rows, config.seed, stream=1,
                                      **in_memory.recipe(config.data))
  return MixedPipeline(labeled, stream, targets, local_devices)


def mixed_streamed(labeled, config, local_devices: int, rows: int) -> MixedPipeline:
  """`labeled` (the config's streamed pipeline) with data.pseudo's set streamed alongside,
  `rows` pseudo-labeled images per global step, with the labeled images' recipe (inception
  crop, RandAugment: Noisy Student noises both) on a random stream of its own."""
  import jax
  from rs.data import streaming
  p = config.data.pseudo
  pseudo = PseudoSet(p.dir)
  pseudo.check(labeled.num_classes, labeled.class_names, p.get('fingerprint'))
  _check_enough(p, rows, pseudo.selected)
  source = PseudoRecords(pseudo, labeled.num_classes, labeled.class_names)
  stream = streaming.create(config, source=source, split='pseudo', batch_size=rows, stream=1)
  return MixedPipeline(labeled, stream, source.targets(jax.process_index(), jax.process_count()),
                       local_devices)


def _check_enough(p, rows: int, selected: int) -> None:
  if rows > selected:
    raise PseudoLabelsError(f'data.pseudo.ratio={p.ratio} asks for {rows} pseudo-labeled '
                            f'images per step; {p.dir} selected {selected}: lower the ratio')
