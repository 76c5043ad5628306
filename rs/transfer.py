"""Starting a run from saved weights: which parameters to load, which to train, and how fast.

Fine-tuning takes a network trained on one task (an rs run exported by rs.export, or timm's
weights converted by rs.convert) to another: the classifier is replaced (`init_skip`), the
backbone can be frozen or trained slower (`optimizer.param_groups`). Parameters are named by
their path, e.g. 'stage4_block3/conv2/conv/kernel' or 'head/kernel'.

A 2D network's weights start a 3D one of the same layout (rs/models/resnet3d.py): each 2D
kernel is inflated over time (I3D's rule: repeated over the temporal extent and divided by it),
so on a clip that repeats one image every frame computes what the 2D network computed on the
image, away from the clip's ends (where the temporal padding is zeros).

Weights for images of another channel count start the network all the same: its input
convolution is adapted (`adapt_channels`, timm's rule): to 1 channel, the kernel is summed
over its input channels; from 1, repeated and divided by the count; from 3 to N, RGB tiled
and scaled by 3/N. So a grayscale image through the adapted network gives exactly what the
original gave on that image replicated to RGB, when the normalisation is the same for every
channel (ImageNet's per-channel means differ by up to 16%: close, not exact).
"""
import logging
import re
from typing import Any

import jax
import numpy as np

from rs.errors import UserError
from rs.state import path_name


class WeightsMismatch(UserError, ValueError):
  """Saved weights that do not fit the network outside what the config allows to differ."""


def named_leaves(tree) -> dict[str, Any]:
  return {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _listing(names, limit: int = 8) -> str:
  names = sorted(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def inflate(kernel, shape) -> np.ndarray | None:
  """A 2D conv kernel (kh, kw, in, out) as the 3D kernel of `shape` (kt, kh, kw, in, out):
  repeated kt times over time and divided by kt. None where `shape` is not such an inflation."""
  kernel = np.asarray(kernel)
  if len(shape) != kernel.ndim + 1 or kernel.ndim != 4 or tuple(shape[1:]) != kernel.shape:
    return None
  return (np.repeat(kernel[None], shape[0], axis=0) / shape[0]).astype(kernel.dtype)


def adapt_channels(kernel, channels: int) -> np.ndarray:
  """A conv kernel (..., in, out) for `channels` input channels (timm's adapt_input_conv):
  to 1, summed over its input channels; from 1, repeated and divided by `channels`; from 3,
  RGB tiled to `channels` and scaled by 3 / channels. ValueError for anything else."""
  kernel = np.asarray(kernel)
  have = kernel.shape[-2]
  if channels == have:
    return kernel
  if channels == 1:
    out = kernel.sum(axis=-2, keepdims=True)
  elif have == 1:
    out = np.repeat(kernel, channels, axis=-2) / channels
  elif have == 3:
    out = np.tile(kernel, (1,) * (kernel.ndim - 2) + (-(-channels // 3), 1))[..., :channels, :]
    out = out * (3 / channels)
  else:
    raise ValueError(f'no rule adapts {have} input channels to {channels}')
  return out.astype(kernel.dtype)


def _adaptable(have: int, want: int) -> bool:
  return have == want or want == 1 or have in (1, 3)


def _adapted(saved, shape, channels: tuple[int, int] | None):
  """`saved` made to fit `shape`: an image kernel inflated over time (3D networks), with its
  input channels adapted if it reads the images (`channels`: (saved's, the network's)); or
  None where neither applies. Metadata leaves (jax.ShapeDtypeStruct) give metadata."""
  have, want = tuple(np.shape(saved)), tuple(shape)
  time = len(want) == len(have) + 1  # inflation: (kh, kw, in, out) -> (kt, kh, kw, in, out)
  if len(have) < 3 or len(want) not in (len(have), len(have) + 1):
    return None
  if have[:-2] != want[1 if time else 0:-2] or have[-1] != want[-1]:
    return None
  if have[-2] != want[-2] and not (channels and (have[-2], want[-2]) == tuple(channels)
                                   and _adaptable(*channels)):
    return None
  if time and len(have) != 4:
    return None
  if isinstance(saved, jax.ShapeDtypeStruct):  # shapes only (validate's check)
    return jax.ShapeDtypeStruct(want, saved.dtype)
  kernel = adapt_channels(saved, want[-2])
  return inflate(kernel, want) if time else kernel


def merge(initial, saved, skip: str | None = None, channels: tuple[int, int] | None = None):
  """`initial` (a freshly initialised variables tree) with every leaf that `saved` has taken
  from `saved`, except those whose name matches the regex `skip` (kept as initialised).
  2D kernels are inflated for a 3D network; with `channels` = (the saved network's input
  channels, this one's), the input convolution is adapted to them (see above).

  Returns (merged tree, report). The report lists the parameters loaded, skipped by the
  pattern, missing from `saved` and unexpected in it, inflated and channel-adapted. Raises
  WeightsMismatch for a parameter that `saved` lacks or has with another shape, unless `skip`
  covers it: nothing is silently left at its random initial value.
  """
  pattern = re.compile(skip) if skip else None
  wanted, found = named_leaves(initial), named_leaves(saved)
  # The pattern sees names within their collection ('head/kernel', not 'params/head/kernel'),
  # as optimizer.param_groups does.
  skipped = {n for n in wanted if pattern and pattern.search(n.split('/', 1)[-1])}
  missing = set(wanted) - set(found) - skipped
  unexpected = set(found) - set(wanted)
  misshapen = {n for n in set(wanted) & set(found) - skipped
               if tuple(np.shape(found[n])) != tuple(np.shape(wanted[n]))}
  adapted = {}
  for n in misshapen:
    kernel = _adapted(found[n], np.shape(wanted[n]), channels)
    if kernel is not None:
      adapted[n] = kernel
  misshapen -= set(adapted)
  if missing or misshapen:
    problems = []
    if misshapen:
      problems.append('shapes differ for ' + _listing(
          f'{n} (saved {tuple(np.shape(found[n]))}, model {tuple(np.shape(wanted[n]))})'
          for n in misshapen))
    if missing:
      problems.append('missing from the weights: ' + _listing(missing))
    raise WeightsMismatch('; '.join(problems) + ' - set --config.init_skip to a regex of the '
                          "parameters to keep freshly initialised (e.g. '^head/' for a new "
                          'classifier), or check the model')
  saved_shapes = {n: tuple(np.shape(found[n])) for n in adapted}
  found = {**found, **adapted}
  merged = jax.tree_util.tree_map_with_path(
      lambda p, x: x if path_name(p) in skipped else found[path_name(p)], initial)
  report = {'loaded': sorted(set(wanted) - skipped), 'skipped': sorted(skipped),
            'unexpected': sorted(unexpected),
            'inflated': sorted(n for n, before in saved_shapes.items()
                               if len(np.shape(wanted[n])) == len(before) + 1),
            'channels_adapted': sorted(n for n, before in saved_shapes.items()
                                       if np.shape(wanted[n])[-2] != before[-2]),
            'channels': tuple(channels) if channels else None}
  return merged, report


def log_report(report: dict, source: str) -> None:
  logging.info('Loaded %d arrays from %s.', len(report['loaded']), source)
  if report.get('channels_adapted'):
    have, want = report['channels']
    rule = ('summed over its input channels' if want == 1 else
            f'repeated and divided by {want}' if have == 1 else f'tiled and scaled by 3/{want}')
    logging.info('Adapted %s from %d-channel to %d-channel images (%s).',
                 _listing(report['channels_adapted']), have, want, rule)
  if report.get('inflated'):
    logging.info('Inflated %d 2D kernels over time (repeated, divided by the temporal extent): '
                 '%s', len(report['inflated']), _listing(report['inflated'], 8))
  if report['skipped']:
    logging.info('Kept freshly initialised (init_skip): %s', _listing(report['skipped'], 20))
  if report['unexpected']:
    logging.warning('Not used (in the weights, not in the model): %s',
                    _listing(report['unexpected'], 20))


def parse_param_groups(groups) -> list[tuple[re.Pattern, float]]:
  """('REGEX:MULTIPLIER', ...) -> [(compiled regex, multiplier)]; first match wins."""
  parsed = []
  for group in groups or ():
    regex, sep, multiplier = str(group).rpartition(':')
    try:
      parsed.append((re.compile(regex), float(multiplier)))
      if not sep or float(multiplier) < 0:
        raise ValueError
    except (re.error, ValueError):
      raise ValueError(f"optimizer.param_groups entry {group!r}: write 'REGEX:MULTIPLIER' with "
                       "a multiplier >= 0, e.g. '^head/:10' or '.*:0' (frozen)") from None
  return parsed


def group_labels(params, groups: list[tuple[re.Pattern, float]]):
  """Each parameter's learning-rate multiplier, as a string label for optax.multi_transform
  (the first matching group's; 1 if none matches)."""
  def label(path, _):
    name = path_name(path)
    for regex, multiplier in groups:
      if regex.search(name):
        return repr(multiplier)
    return repr(1.0)
  return jax.tree_util.tree_map_with_path(label, params)
