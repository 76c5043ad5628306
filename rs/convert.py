"""Import timm's ResNet-RS weights (the official TF1 checkpoints, ported) into rs.

  python -m rs.convert --from=timm --model=resnetrs50 --checkpoint=resnetrs50.pth --out=DIR

writes DIR in the weights format (rs.weights): DIR/variables (rs's `params` and
`batch_stats`) and DIR/model.json, a complete description: the network, ImageNet's 1000 class
names, and the official evaluation input at the checkpoint's released resolution (--image_size
for another). Then `--config.init_from=DIR` starts training or fine-tuning from them,
`python -m rs.evaluate --weights=DIR` evaluates them on ImageNet and `python -m rs.predict
--checkpoint=DIR photo.jpg` names what a photo shows, with no config. From a notebook,
`from_timm(timm_model.state_dict(), 'resnetrs50')` returns the same variables in memory.

Every rs variable is looked up by name and shape and every timm tensor must be used once:
anything missing, left over or misshapen is an error that names it, so nothing is ever
silently left at its random initial value. With --json, stdout holds only one JSON object.
"""
import json
import logging
import os
import re
from typing import Any, Mapping

import flax
import jax
import numpy as np
from absl import app, flags

from rs import cli, logs, weights
from rs.errors import UserError, one_line
from rs.models import architecture, create_model, registry
from rs.models.efficientnet import EfficientNet

# Sequential indices of timm's deep stem (conv1 = [conv, bn, act, conv, bn, act, conv]; the
# third conv's BN is `bn1`) and of the replaced stem pool (maxpool = [conv, bn, act]).
_DEEP_STEM = {'stem1': ('conv1.0', 'conv1.1'), 'stem2': ('conv1.3', 'conv1.4'),
              'stem3': ('conv1.6', 'bn1'), 'stem_pool': ('maxpool.0', 'maxpool.1')}
_CLASSIC_STEM = {'stem1': ('conv1', 'bn1'), 'stem_pool': ('maxpool.0', 'maxpool.1')}
_LEAF = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
         ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
         ('batch_stats', 'var'): 'running_var'}


class ConversionError(UserError, ValueError):
  pass


def timm_name(path: tuple[str, ...], deep_stem: bool, avg_down: bool) -> str:
  """The timm state-dict key of the rs variable at `path` = (collection, module..., leaf).

  deep_stem: rs stem='deep' (timm stem_type='deep'), else the single 7x7 conv. avg_down:
  timm's ResNet-D shortcut (AvgPool, conv, BN) shifts the shortcut's conv and BN to
  indices 1 and 2 of `downsample`, also where the pool is an Identity (stride 1).
  """
  collection, *modules, leaf = path
  suffix = _LEAF[(collection, leaf)]
  top = modules[0]
  if top == 'head':
    return f'fc.{suffix}'
  stem = _DEEP_STEM if deep_stem else _CLASSIC_STEM
  if top in stem:
    conv, bn = stem[top]
    return f'{conv if modules[1] == "conv" else bn}.{suffix}'
  match = re.fullmatch(r'stage(\d+)_block(\d+)', top)
  if not match:
    raise ConversionError(f'rs variable {"/".join(path)} has no timm counterpart')
  block = f'layer{match[1]}.{int(match[2]) - 1}'
  part, sub = modules[1], modules[2]
  if part == 'se':
    return f'{block}.se.{"fc1" if sub == "reduce" else "fc2"}.{suffix}'
  if part == 'shortcut':
    conv, bn = (1, 2) if avg_down else (0, 1)
    return f'{block}.downsample.{conv if sub == "conv" else bn}.{suffix}'
  n = part[-1]  # conv1/conv2/conv3 -> timm convN, bnN
  return f'{block}.{"conv" if sub == "conv" else "bn"}{n}.{suffix}'


# EfficientNet: rs block part -> timm module, for blocks with an expansion conv (timm's
# InvertedResidual) and without one (stage 1's DepthwiseSeparableConv).
_MBCONV = {'expand': ('conv_pw', 'bn1'), 'depthwise': ('conv_dw', 'bn2'),
           'project': ('conv_pwl', 'bn3')}
_SEPARABLE = {'depthwise': ('conv_dw', 'bn1'), 'project': ('conv_pw', 'bn2')}
_EFFICIENTNET_TOP = {'stem': ('conv_stem', 'bn1'), 'head_conv': ('conv_head', 'bn2')}


def timm_efficientnet_name(path: tuple[str, ...], expanded: bool) -> str:
  """The timm `tf_efficientnet_b*` key of the rs EfficientNet variable at `path`; `expanded`:
  its block has an expansion conv."""
  collection, *modules, leaf = path
  suffix = _LEAF[(collection, leaf)]
  top = modules[0]
  if top == 'head':
    return f'classifier.{suffix}'
  if top in _EFFICIENTNET_TOP:
    conv, bn = _EFFICIENTNET_TOP[top]
    return f'{conv if modules[1] == "conv" else bn}.{suffix}'
  match = re.fullmatch(r'stage(\d+)_block(\d+)', top)
  if not match:
    raise ConversionError(f'rs variable {"/".join(path)} has no timm counterpart')
  block = f'blocks.{int(match[1]) - 1}.{int(match[2]) - 1}'
  part, sub = modules[1], modules[2]
  if part == 'se':
    return f'{block}.se.conv_{sub}.{suffix}'
  conv, bn = (_MBCONV if expanded else _SEPARABLE)[part]
  return f'{block}.{conv if sub == "conv" else bn}.{suffix}'


def _to_rs_layout(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # conv: PyTorch OIHW -> Flax HWIO
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:  # linear: (out, in) -> (in, out)
    return value.T
  return value


def from_timm(state_dict: Mapping[str, Any], model_name: str, **overrides) -> dict:
  """rs variables {'params', 'batch_stats'} of `model_name` from a timm state dict (a timm
  ResNet-RS / ResNet, or `tf_efficientnet_b*` for efficientnet_b*).

  The class count comes from timm's classifier; the deep or classic stem and the ResNet-D
  shortcut from the rs model (`overrides` as in create_model).
  """
  state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
           for k, v in state_dict.items()}
  efficientnet = registry.family(model_name) is EfficientNet
  kind, classifier = ('EfficientNet', 'classifier') if efficientnet else ('ResNet', 'fc')
  if f'{classifier}.weight' not in state:
    if any(k.startswith(('conv1.', 'layer1.', 'conv_stem.', 'blocks.')) for k in state):
      raise ConversionError(f"the checkpoint is a timm {kind} without its classifier (no "
                            f"{classifier}.weight: timm's num_classes=0), or a model of the "
                            "other family; convert one saved with its classifier, then "
                            "fine-tune a new head with --config.init_skip='^head/'")
    raise ConversionError(f'the checkpoint has no {classifier}.weight: not a timm {kind} state '
                          'dict')
  overrides.setdefault('num_classes', state[f'{classifier}.weight'].shape[0])
  model = create_model(model_name, **overrides)
  # Input channels as timm's first conv has them (RGB, or 1 for grayscale models); any input
  # size gives the same variable shapes.
  if efficientnet:
    first = 'conv_stem.weight'
  else:
    first = f"{(_DEEP_STEM if model.stem == 'deep' else _CLASSIC_STEM)['stem1'][0]}.weight"
  channels = state[first].shape[1] if first in state else 3
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), architecture.example_input(model, channels), train=False))
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
  expanded = {path[1] for path in flat if len(path) > 2 and path[2] == 'expand'}
  converted, used = {}, set()
  for path, want in flat.items():
    if efficientnet:
      key = timm_efficientnet_name(path, expanded=path[1] in expanded)
    else:
      key = timm_name(path, deep_stem=model.stem == 'deep', avg_down=model.resnetd_shortcut)
    if key not in state:
      raise ConversionError(f'{key} not in the checkpoint (needed for rs {"/".join(path)}); '
                            f'is it a timm {"tf_" if efficientnet else ""}{model_name}?')
    value = _to_rs_layout(state[key])
    if value.shape != want.shape:
      raise ConversionError(f'{key} has shape {state[key].shape}, rs {"/".join(path)} needs '
                            f'{want.shape} (after layout change); wrong --model, --stage_sizes or '
                            '--width_multiplier?')
    converted[path] = value.astype(want.dtype)
    used.add(key)
  unused = sorted(k for k in set(state) - used if not k.endswith('num_batches_tracked'))
  if unused:
    raise ConversionError(f'{len(unused)} checkpoint tensors have no place in rs {model_name}: '
                          f'{", ".join(unused[:5])}{" ..." if len(unused) > 5 else ""}')
  return flax.traverse_util.unflatten_dict(converted)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A timm state dict from .safetensors (no torch needed) or .pth/.bin (torch)."""
  if not os.path.isfile(path):
    raise ConversionError(f'--checkpoint={path} does not exist or is not a file')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file
    try:
      state = load_file(path)
    except Exception as e:  # pylint: disable=broad-except (safetensors' own error types)
      raise ConversionError(f'cannot read {path} as safetensors ({type(e).__name__}: '
                            f'{one_line(e, 120)})') from None
    if not state:
      raise ConversionError(f'{path} holds no tensors')
    return state
  try:
    import torch
  except ImportError:
    raise ConversionError(f'reading {path} needs PyTorch: pip install torch, or give a '
                          '.safetensors file') from None
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception:  # pylint: disable=broad-except
    # torch's message advises weights_only=False, which would run code from the file: never.
    raise ConversionError(f'cannot read {path} as a PyTorch state dict of tensors (not a '
                          'torch.save file, or it holds more than tensors): give a timm '
                          '.pth/.bin/.safetensors checkpoint') from None
  for wrapper in ('state_dict', 'model', 'state_dict_ema'):  # training checkpoints nest it
    if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
      state = state[wrapper]
  if not isinstance(state, dict) or not state or not all(
      isinstance(v, torch.Tensor) for v in state.values()):
    kind = (type(state).__name__ if not isinstance(state, dict) else
            'dict with values other than tensors' if state else 'empty dict')
    raise ConversionError(f'{path} holds a {kind}, not a state dict of tensors: give a timm '
                          'model.state_dict() checkpoint')
  return {k.removeprefix('module.'): v.numpy() for k, v in state.items()}


def convert_file(checkpoint_path: str, model_name: str, out: str,
                 image_size: int | None = None, **overrides) -> dict:
  """Converts a timm checkpoint file and saves it under `out` with its description; returns
  the variables. `image_size` defaults to the released checkpoint's resolution."""
  registry.check_name(model_name)
  image_size = image_size or weights.released_image_size(model_name)
  if not image_size:
    raise ConversionError(f'{model_name} has no released resolution: give --image_size, the '
                          'resolution the checkpoint was trained at')
  variables = from_timm(read_state_dict(checkpoint_path), model_name, **overrides)
  num_classes = int(variables['params']['head']['kernel'].shape[-1])
  stem = variables['params'].get('stem1') or variables['params']['stem']  # ResNet / EfficientNet
  channels = int(stem['conv']['kernel'].shape[2])  # timm's in_chans
  weights.save(out, variables, weights.imagenet(
      model_name, overrides, int(image_size), num_classes, channels,
      source={'tool': 'rs.convert', 'from': 'timm',
              'checkpoint': os.path.abspath(checkpoint_path)}))
  return variables


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_enum('from', 'timm', ['timm'], 'Where the weights come from.')
  flags.DEFINE_string('model', 'resnetrs50', 'The rs (and timm) model name.')
  flags.DEFINE_string('checkpoint', None, 'timm state dict: .pth, .bin or .safetensors.')
  flags.DEFINE_string('out', None, 'Directory for the rs weights (local or gs://).')
  flags.DEFINE_list('stage_sizes', None, 'Blocks per stage when not the registered layout, '
                    'e.g. 1,1,1,1.')
  flags.DEFINE_float('width_multiplier', None, 'Channel multiplier when not 1.')
  flags.DEFINE_integer('image_size', None, 'The resolution the checkpoint was trained at '
                       "(model.json's evaluation input); default: the released one.")
  flags.DEFINE_bool('json', False, 'Print only one JSON object (model, params, out) on stdout.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if not f.checkpoint or not f.out:
    raise app.UsageError('give --checkpoint=PATH and --out=DIR')
  logs.quiet_library_logs(logging.ERROR)  # orbax logs each step of a save
  overrides = {}
  if f.stage_sizes:
    overrides['stage_sizes'] = f.stage_sizes  # create_model makes it a tuple of ints
  if f.width_multiplier:
    overrides['width_multiplier'] = f.width_multiplier
  variables = convert_file(f.checkpoint, f.model, f.out, f.image_size, **overrides)
  count = sum(x.size for x in jax.tree.leaves(variables['params']))
  if f.json:
    print(json.dumps({'model': f.model, 'params': int(count), 'out': f.out}))
  else:
    print(f'Wrote {f.model} ({int(count):,} parameters) to {f.out}; score it with: python -m '
          f'rs.evaluate --weights={f.out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
