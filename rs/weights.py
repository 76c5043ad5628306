"""The weights format: a network's variables and the complete description of how to use them.

A weights directory holds
  DIR/variables   an orbax checkpoint of {'params', 'batch_stats'} (rs.checkpoint.save_tree)
  DIR/model.json  `Description`: the registered network and its architecture, the class count
                  and names, the evaluation input (rs.data.eval_input.EvalInput: size,
                  channels, normalisation, crop), the dataset it was made for, and where the
                  weights came from.
Every producer writes it through `save` (rs.convert, rs.export; a run's workdir/model.json,
made by `describe`, through `write_description`); every consumer reads it through `load` or
`read` (rs.evaluate,
rs.predict, rs.export's serving functions, `config.init_from`), and builds the network with
`Description.build`, so weights evaluate and predict without the config that made them.

model.json carries `"version": 2`. Version 1 (rs before this module: no "version" key; rs.export
wrote flat input fields, rs.convert wrote only the network) is read and completed by
`_upgrade`: timm imports get the official ImageNet evaluation at the released resolution.
"""
import dataclasses
import json

import jax
import numpy as np

from rs import checkpoint, rundir
from rs.data import eval_input, sources
from rs.errors import UserError, one_line
from rs.models import DTYPES, architecture, create_model, official

VERSION = 2


class WeightsError(UserError, ValueError):
  """A weights directory that cannot be used: the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Description:
  """Everything a consumer needs to use a set of weights (model.json)."""
  model: str  # a registered name (rs.models.MODELS)
  architecture: dict  # create_model's arguments that change the network (rs.models.architecture)
  num_classes: int
  input: eval_input.EvalInput
  class_names: tuple[str, ...] | None = None  # by label index; None: 'class 7'
  # {'name', 'train_split', 'eval_split', 'data_dir'}: what it was trained and evaluated on
  dataset: dict | None = None
  source: dict = dataclasses.field(default_factory=dict)  # the producer and its provenance

  def __post_init__(self):
    if self.class_names is not None and len(self.class_names) != self.num_classes:
      raise WeightsError(f'model.json names {len(self.class_names)} classes, the model has '
                         f'{self.num_classes}')

  def build(self, dtype: str = 'float32', **fields):
    """The described network for inference (dtype and other non-architecture `fields` as
    create_model takes them)."""
    return create_model(self.model, num_classes=self.num_classes, dtype=DTYPES[dtype],
                        **self.architecture, **fields)

  def names(self) -> list[str]:
    """A name for every class: model.json's, else 'class 7'."""
    if self.class_names is not None:
      return list(self.class_names)
    return [f'class {i}' for i in range(self.num_classes)]

  def to_json(self) -> dict:
    return {'version': VERSION, 'model': self.model,
            'architecture': architecture.to_json(self.architecture),
            'num_classes': self.num_classes, 'input': self.input.to_json(),
            'class_names': None if self.class_names is None else list(self.class_names),
            'dataset': self.dataset, 'source': self.source}

  @classmethod
  def from_json(cls, values: dict) -> 'Description':
    version = values.get('version', 1)
    if version == 1:
      values = _upgrade(values)
    elif version != VERSION:
      raise WeightsError(f'model.json has format version {version}; this rs reads versions 1 '
                         f'to {VERSION}: upgrade rs')
    names = values.get('class_names')
    return cls(model=values['model'],
               architecture=architecture.from_json(values.get('architecture') or {}),
               num_classes=int(values['num_classes']),
               input=eval_input.EvalInput.from_json(values['input']),
               class_names=None if names is None else tuple(str(n) for n in names),
               dataset=values.get('dataset'), source=dict(values.get('source') or {}))


def describe(config, num_classes: int, channels: int, class_names=None,
             native_size: int | None = None, source: dict | None = None) -> Description:
  """The Description of what a training config builds and evaluates (a run's model.json)."""
  data = config.data
  return Description(
      model=config.model.name, architecture=architecture.of_config(config.model),
      num_classes=int(num_classes),
      input=eval_input.EvalInput.from_config(config, channels, native_size),
      class_names=None if class_names is None else tuple(class_names),
      dataset={'name': data.name, 'train_split': data.train_split, 'eval_split': data.eval_split,
               'data_dir': data.data_dir},
      source=dict(source or {}))


def imagenet(model: str, arch: dict, image_size: int, num_classes: int = 1000,
             channels: int = 3, source: dict | None = None) -> Description:
  """An ImageNet network evaluated the official way (rs.convert's timm imports). A grayscale
  network (1 channel) is normalised with the mean of ImageNet's three means and stds."""
  mean, std = sources.IMAGENET_MEAN, sources.IMAGENET_STD
  if channels == 1:
    mean, std = (sum(mean) / 3,), (sum(std) / 3,)
  return Description(
      model=model, architecture=architecture.from_json(arch), num_classes=num_classes,
      input=eval_input.EvalInput(image_size=image_size, channels=channels, mean=mean, std=std,
                                 method='center_crop', crop_padding=32),
      # A 1000-class network is ImageNet's; another class count, an unknown fine-tuned task.
      class_names=tuple(sources.imagenet_class_names()) if num_classes == 1000 else None,
      dataset=({'name': 'imagenet2012', 'train_split': 'train', 'eval_split': 'validation',
                'data_dir': None} if num_classes == 1000 else None),
      source=dict(source or {}))


def released_image_size(model: str) -> int | None:
  """The resolution of the official checkpoint of `model` that timm ports (rs50 160 ...
  rs420 320), or None."""
  return official.TIMM_IMAGE_SIZE.get(model)


def _upgrade(meta: dict) -> dict:
  """A version-1 model.json as version 2."""
  arch = dict(meta.get('overrides') or {})
  if meta.get('source') == 'timm':  # rs.convert: the network only
    size = meta.get('image_size') or released_image_size(meta['model'])
    if not size:
      raise WeightsError(f"model.json (version 1) gives no image size and {meta['model']} has "
                         'no released resolution: convert it again with --image_size')
    described = imagenet(meta['model'], arch, int(size), int(meta['num_classes']),
                         source={'tool': 'rs.convert', 'from': 'timm',
                                 'checkpoint': meta.get('checkpoint')}).to_json()
    described['architecture'] = arch
    return described
  dataset = meta.get('dataset')
  splits = _version_1_splits(meta)
  method = meta.get('preprocess') or ('resize' if meta.get('channels') == 1 else 'center_crop')
  names = meta.get('class_names')  # given: kept, so that a wrong count is an error
  if names is None:
    names = sources.class_names(dataset)
    names = names if names and len(names) == int(meta['num_classes']) else None
  return {
      'model': meta['model'], 'architecture': arch, 'num_classes': meta['num_classes'],
      'input': {'image_size': meta['image_size'], 'channels': meta['channels'],
                'mean': meta['mean'], 'std': meta['std'], 'method': method,
                'crop_padding': meta.get('eval_crop_padding') or 32,
                'crop_fraction': meta.get('eval_crop_fraction'),
                'native_size': sources.NATIVE_SIZE.get(dataset) if method == 'resize' else None},
      'class_names': names,
      'dataset': {'name': dataset, **splits} if dataset else None,
      'source': {'tool': meta.get('source'), **{k: meta[k] for k in ('workdir', 'step', 'weights')
                                                if k in meta}},
  }


def _version_1_splits(meta: dict) -> dict:
  """The splits and data_dir of the run a version-1 rs.export came from: its config.json where
  the workdir is still readable, else the in-memory datasets' own test split."""
  try:
    data = rundir.read_config(meta['workdir']).data
    return {'train_split': data.train_split, 'eval_split': data.eval_split,
            'data_dir': data.data_dir}
  except (KeyError, OSError, ValueError):  # no workdir recorded, gone, or unreadable
    splits = sources.ARRAY_DATASETS.get(meta.get('dataset'))
    return {'train_split': 'train', 'eval_split': splits[-1] if splits else None,
            'data_dir': None}


# Reading and writing.


def saved_channels(directory: str) -> int | None:
  """The input channels of the images the weights in `directory` were made for (model.json),
  or None when it has no readable description."""
  try:
    return read(directory).input.channels
  except WeightsError:
    return None


def read(directory: str) -> Description:
  """DIR/model.json; WeightsError when it is missing or unreadable."""
  meta_file = rundir.path(directory) / 'model.json'
  if not meta_file.exists():
    raise WeightsError(f'{directory} holds no rs weights (no model.json): give a directory '
                       'written by rs.export or rs.convert')
  try:
    return Description.from_json(json.loads(meta_file.read_text()))
  except WeightsError:
    raise
  except (ValueError, KeyError, TypeError) as e:
    raise WeightsError(f'{meta_file} is not a weights description ({type(e).__name__}: '
                       f'{one_line(e)})') from None


def write_description(directory: str, description: Description) -> None:
  """DIR/model.json (DIR local or gs://; created if need be)."""
  rundir.path(directory).mkdir(parents=True, exist_ok=True)
  (rundir.path(directory) / 'model.json').write_text(json.dumps(description.to_json(), indent=2))


def save(directory: str, variables, description: Description) -> None:
  """Writes DIR/variables and DIR/model.json (DIR local or gs://)."""
  checkpoint.save_tree(str(rundir.path(directory) / 'variables'), variables)
  write_description(directory, description)


def load(directory: str, sharding: jax.sharding.Sharding | None = None,
         check: bool = True) -> tuple[dict, Description]:
  """(variables, description) of a weights directory, on `sharding` (default: one local
  device). With `check`, the variables must be exactly the described network's."""
  description = read(directory)
  variables = read_variables(directory, sharding)
  if check:
    check_fits(description.build(), variables, description.input.channels, directory)
  return variables, description


def read_variables(directory: str, sharding: jax.sharding.Sharding | None = None) -> dict:
  """The arrays of a weights directory alone, on `sharding` (default: one local device): what
  starting a run from saved weights needs (rs.transfer compares them with the network)."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    return checkpoint.restore_tree(str(rundir.path(directory) / 'variables'), sharding)
  except Exception as e:  # missing or damaged array files: orbax/tensorstore raise many types
    raise WeightsError(f'the arrays in {directory}/variables cannot be read ({type(e).__name__}:'
                       f' {one_line(e)})') from None


def shapes(model, channels: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """{'params/stem1/conv/kernel': (shape, dtype)} of the network's variables."""
  tree = jax.eval_shape(lambda: model.init(
      jax.random.key(0), architecture.example_input(model, channels), train=False))
  return shapes_of({k: tree[k] for k in ('params', 'batch_stats')})


def shapes_of(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  return {'/'.join(str(k.key) for k in path): (tuple(np.shape(x)), str(x.dtype))
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def check_fits(model, variables, channels: int, where: str = 'the weights') -> None:
  """The variables are exactly the network's: the same names, shapes and dtypes."""
  want, got = shapes(model, channels), shapes_of(variables)
  diffs = [f'{k}: saved {got.get(k)}, model {want.get(k)}' for k in sorted(want.keys() | got.keys())
           if want.get(k) != got.get(k)]
  if diffs:
    raise WeightsError(f'{where} do not fit the network model.json describes '
                       f'({len(diffs)} differences, e.g. {diffs[0]})')
