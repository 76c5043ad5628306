"""Where streamed examples come from: encoded images and labels, this host's share, in order.

Two sources give the same thing, a tf.data dataset of {'image': encoded bytes, 'label': int32,
'path': where the bytes came from (the image file, or RECORD_FILE[INDEX]), for messages}; with a
`check`, also 'ok': check(image, path), computed in the map that reads each record (a map or
filter of its own costs a function call per image, several times the check's own ops):
- `TfdsRecords`: a prepared tfds dataset (any image-classification builder: imagenet2012 from
  its manual-download directory, tf_flowers, ...), read straight from its record files;
- `FolderRecords`: the user's own images, ROOT/SPLIT/CLASS/*.jpg|png (classes: the sorted
  sub-folders of the training split).

Each host reads its own even share of a split. With an `order_seed`, the order is a pure
function of that seed: files (or file pieces) are permuted statelessly, interleaved
deterministically and shuffled with a seeded buffer, so the pipeline can rebuild any epoch
from (seed, epoch) alone and a resumed run needs no iterator state.
"""
import os
import re

import numpy as np
import tensorflow as tf
from etils import epath

from rs.data import sources, video_files

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def seed_hash(seed: tf.Tensor) -> tf.Tensor:
  """A scalar int64 derived from a stateless [2] seed (tf.data's shuffle takes one int)."""
  return tf.random.stateless_uniform([], seed, minval=None, maxval=None, dtype=tf.int64)


def permute(tensors: tuple, order_seed) -> tuple:
  """The same stateless permutation of each tensor's first axis (identity without a seed)."""
  if order_seed is None:
    return tensors
  order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(tensors[0])[0]),
                                                   seed=order_seed)
  return tuple(tf.gather(t, order) for t in tensors)


def prepare_hint(name: str) -> str:
  if name.startswith('imagenet2012'):
    return ('download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org '
            'into a folder and pass --config.data.manual_dir=FOLDER (rs prepares it once into '
            'data_dir; or run `tfds build imagenet2012 --manual_dir=FOLDER --data_dir=DATA_DIR`'
            ' and pass --config.data.data_dir=DATA_DIR)')
  return f'`tfds build {name} --data_dir=DATA_DIR` and pass --config.data.data_dir=DATA_DIR'


def open_builder(name: str, data_dir: str | None, manual_dir: str | None = None,
                 prepare: bool = False):
  """The prepared tfds builder, or a one-line error saying where it looked and what to do.

  With `prepare` (single-host training), an unprepared dataset is prepared first: from
  `manual_dir` for manual-download datasets (imagenet2012), else by tfds's download.
  """
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # unknown name (tfds lists its whole catalogue), unreadable data_dir
    why = str(e).strip().split('\n')[0]
    raise FileNotFoundError(f'tfds dataset {name!r} unavailable in '
                            f'{data_dir or "the default data_dir"} ({why}); {prepare_hint(name)}'
                            ) from None
  if not builder.is_prepared() and prepare and (manual_dir or not name.startswith('imagenet')):
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:
      first_line = str(e).strip().split('\n')[0][:200]
      raise FileNotFoundError(f'could not prepare {name} in {builder.data_dir} '
                              f'({type(e).__name__}: {first_line}); {prepare_hint(name)}'
                              ) from None
  if not builder.is_prepared():
    raise FileNotFoundError(f'no prepared {name} in {builder.data_dir}; {prepare_hint(name)}')
  return builder


class TfdsRecords:
  """Encoded examples of a prepared tfds dataset, read from its record files."""

  def __init__(self, name: str, data_dir: str | None = None, manual_dir: str | None = None,
               prepare: bool = False):
    import tensorflow_datasets as tfds
    self._tfds = tfds
    self.name = name
    self.builder = open_builder(name, data_dir, manual_dir, prepare)
    info = self.builder.info
    if info.file_format.value != 'tfrecord':
      raise ValueError(f'{name} is stored as {info.file_format.value}; rs streams tfrecord '
                       'datasets: rebuild it with `tfds build --file_format=tfrecord`')
    self.image_key, self.label_key = info.supervised_keys or (self._image_key(info), 'label')
    # A video's frames (a `Video` feature: one encoded image per frame) become one frame pack,
    # so a record is one string whatever it holds (rs.data.video_pipeline decodes it).
    self.video = isinstance(info.features[self.image_key], tfds.features.Video)
    label = info.features[self.label_key]
    self.num_classes = label.num_classes
    self.class_names = sources.label_names(name, label)

  def _image_key(self, info) -> str:
    """The input feature of a dataset without supervised keys: its video, else 'image'."""
    videos = [k for k, f in info.features.items() if isinstance(f, self._tfds.features.Video)]
    return videos[0] if videos else 'image'

  def _check_split(self, split: str) -> None:
    base = split.split('[')[0]
    if base not in self.builder.info.splits:
      raise ValueError(f'{self.name} has splits {sorted(self.builder.info.splits)}, '
                       f'not {base!r}')

  def num_examples(self, split: str, host: int = 0, hosts: int = 1) -> int:
    """Examples in `split`, or in host `host`'s share of it when `hosts` > 1."""
    self._check_split(split)
    part = self._tfds.even_splits(split, n=hosts)[host] if hosts > 1 else split
    return self.builder.info.splits[part].num_examples

  def names(self, split: str, host: int = 0, hosts: int = 1, order_seed=None) -> None:
    """Record names in `records`' order: unknown (a shuffle buffer mixes the record files)."""
    del split, host, hosts, order_seed

  def records(self, split: str, host: int = 0, hosts: int = 1, order_seed=None,
              shuffle_buffer: int = 16 * 1024, check=None) -> tf.data.Dataset:
    """Host `host`'s share of `split`; in file order, or seeded-shuffled with `order_seed`."""
    self._check_split(split)
    part = self._tfds.even_splits(split, n=hosts)[host] if hosts > 1 else split
    pieces = [p for p in self.builder.info.splits[part].file_instructions if p.take != 0]
    files, skips, takes = permute((tf.constant([p.filename for p in pieces]),
                                    tf.constant([p.skip for p in pieces], tf.int64),
                                    tf.constant([p.take for p in pieces], tf.int64)),
                                   order_seed)

    def piece(f, skip, take):  # (file, (index in it, serialized example)): zip, not a map
      numbered = tf.data.TFRecordDataset(f, buffer_size=8 << 20).skip(skip).take(take)
      return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(f).repeat(),
                                  numbered.enumerate(skip)))

    ds = tf.data.Dataset.from_tensor_slices((files, skips, takes)).interleave(
        piece, cycle_length=min(16, len(pieces)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    if order_seed is not None:
      ds = ds.shuffle(shuffle_buffer, seed=seed_hash(order_seed))
    features = self.builder.info.features
    decoders = {self.image_key: self._tfds.decode.SkipDecoding()}

    def parse(file, numbered):
      index, serialized = numbered
      name = tf.strings.join([file, '[', tf.strings.as_string(index), ']'])
      example = features.deserialize_example(serialized, decoders=decoders)
      image = example[self.image_key]
      if self.video:
        image = tf.io.serialize_tensor(image)
      return _checked({'image': image,
                       'label': tf.cast(example[self.label_key], tf.int32), 'path': name}, check)

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def subfolders(path: str) -> list[str]:
  """The sorted names of the folders in `path` (local or gs://): a class-folder dataset's
  splits (ROOT/SPLIT) or a split's classes (ROOT/SPLIT/CLASS)."""
  return sorted(p.name for p in epath.Path(path).iterdir() if p.is_dir())


class FolderRecords:
  """Images in ROOT/SPLIT/CLASS/NAME.{jpg,jpeg,png,bmp,gif} (or other files: `extensions`,
  e.g. videos); classes from `class_split`."""

  def __init__(self, root: str, class_split: str = 'train', class_names=None,
               extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
    """Classes are numbered as `class_names` lists them (a trained network's), else as the
    sorted folders of `class_split`."""
    if not root or not epath.Path(root).is_dir():
      raise FileNotFoundError(f'data.data_dir={root!r} is not a folder: for data.name=folder '
                              'point it at ROOT with ROOT/SPLIT/CLASS/image files')
    self.name = 'folder'
    self.root = root
    self.extensions = extensions
    self.class_names = list(class_names) if class_names else self._class_names(class_split)
    self.num_classes = len(self.class_names)
    self._files = {}

  def _split_dir(self, split: str) -> str:
    path = os.path.join(self.root, split)
    if not epath.Path(path).is_dir():
      raise ValueError(f'{self.root} has split folders {subfolders(self.root)}, not {split!r}')
    return path

  def _class_names(self, split: str) -> list[str]:
    path = self._split_dir(split)
    classes = subfolders(path)
    if not classes:
      raise ValueError(f'{path} has no class sub-folders (expected {path}/CLASS/image.jpg)')
    return classes

  def files(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of every image in `split`, sorted by class then file name."""
    if split not in self._files:
      path = self._split_dir(split)
      paths, labels = [], []
      for name in self._class_names(split):
        if name not in self.class_names:
          raise ValueError(f'{path}/{name} is not a class of the training split '
                           f'({len(self.class_names)} classes from {self.root})')
        folder = os.path.join(path, name)
        images = self._entries(folder)
        paths += [os.path.join(folder, f) for f in images]
        labels += [self.class_names.index(name)] * len(images)
      if not paths:
        raise ValueError(f'no {"/".join(self.extensions)} files under {path}/CLASS/')
      self._files[split] = (np.array(paths), np.array(labels, np.int32))
    return self._files[split]

  def _entries(self, folder: str) -> list[str]:
    """The sorted names of a class folder's examples."""
    return sorted(p.name for p in epath.Path(folder).iterdir() if self._is_example(p))

  def _is_example(self, path: epath.Path) -> bool:
    return path.name.lower().endswith(self.extensions)

  def _read(self, path: tf.Tensor) -> tf.Tensor:
    """In graph: an example's bytes."""
    return tf.io.read_file(path)

  def num_examples(self, split: str, host: int = 0, hosts: int = 1) -> int:
    return len(self.files(split)[0][host::hosts])

  def names(self, split: str, host: int = 0, hosts: int = 1, order_seed=None) -> list[str]:
    """The paths of `records(split, host, hosts, order_seed)`, in its order (eager)."""
    paths, _ = self.files(split)
    permuted, = permute((tf.constant(paths[host::hosts]),), order_seed)
    return [path.decode() for path in permuted.numpy()]

  def records(self, split: str, host: int = 0, hosts: int = 1, order_seed=None,
              shuffle_buffer: int = 0, check=None) -> tf.data.Dataset:
    """Host `host`'s share (every hosts-th file); fully permuted with `order_seed`."""
    del shuffle_buffer  # a file list is permuted whole: no buffer needed
    paths, labels = self.files(split)
    paths, labels = permute((tf.constant(paths[host::hosts]),
                              tf.constant(labels[host::hosts])), order_seed)
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: _checked({'image': self._read(path), 'label': label,
                                      'path': path}, check),
        num_parallel_calls=tf.data.AUTOTUNE)


class VideoFolderRecords(FolderRecords):
  """Videos in ROOT/SPLIT/CLASS/: video files (NAME.mp4|mkv|webm|avi|mov|m4v) and folders of
  frame images (NAME/*.jpg|png|..., in natural order: frame2 before frame10), mixed as they
  come. A frame folder's record is a frame pack (rs.data.video_files), decoded after sampling."""

  def __init__(self, root: str, class_split: str = 'train', class_names=None):
    super().__init__(root, class_split, class_names, extensions=video_files.VIDEO_EXTENSIONS)

  def _is_example(self, path: epath.Path) -> bool:
    return path.is_dir() or super()._is_example(path)

  def _read(self, path: tf.Tensor) -> tf.Tensor:
    data = tf.numpy_function(lambda p: read_video(p.decode()), [path], tf.string,
                             stateful=False)
    return tf.ensure_shape(data, [])


def natural_key(name: str) -> list:
  """Sorts 'frame2' before 'frame10'."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def read_video(path: str) -> bytes:
  """A video record's bytes: the file, or a folder's frame images as one frame pack."""
  folder = epath.Path(path)
  if not folder.is_dir():
    return folder.read_bytes()
  frames = sorted((p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS)),
                  key=lambda p: natural_key(p.name))
  return video_files.pack(p.read_bytes() for p in frames)


def _checked(record: dict, check) -> dict:
  """`record`, with 'ok': check(image, path) when there is a check."""
  return record if check is None else record | {'ok': check(record['image'], record['path'])}


def open_source(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                train_split: str = 'train', prepare: bool = False, class_names=None):
  """The record source of dataset `name`: its class folders under `data_dir` (classes
  numbered as `class_names` lists them, else by the folders of `train_split`), or a tfds
  dataset (prepared first if asked)."""
  if name == 'folder':
    if not data_dir:
      raise ValueError('data.name=folder needs --config.data.data_dir=ROOT '
                       '(ROOT/SPLIT/CLASS/image files)')
    return FolderRecords(data_dir, train_split.split('[')[0], class_names)
  return TfdsRecords(name, data_dir, manual_dir, prepare)
