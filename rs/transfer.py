"""Starting a run from saved weights: which parameters to load, which to train, and how fast.

Fine-tuning takes a network trained on one task (an rs run exported by rs.export, or timm's
weights converted by rs.convert) to another: the classifier is replaced (`init_skip`), the
backbone can be frozen or trained slower (`optimizer.param_groups`). Parameters are named by
their path, e.g. 'stage4_block3/conv2/conv/kernel' or 'head/kernel'.

A 2D network's weights start a 3D one of the same layout (rs/models/resnet3d.py): each 2D
kernel is inflated over time (I3D's rule: repeated over the temporal extent and divided by it),
so on a clip that repeats one image every frame computes what the 2D network computed on the
image, away from the clip's ends (where the temporal padding is zeros).
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


def merge(initial, saved, skip: str | None = None):
  """`initial` (a freshly initialised variables tree) with every leaf that `saved` has taken
  from `saved`, except those whose name matches the regex `skip` (kept as initialised).

  Returns (merged tree, report). The report lists the parameters loaded, skipped by the
  pattern, missing from `saved` and unexpected in it. Raises WeightsMismatch for a parameter
  that `saved` lacks or has with another shape, unless `skip` covers it: nothing is silently
  left at its random initial value.
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
    inflated = inflate(found[n], np.shape(wanted[n]))
    if inflated is not None:
      adapted[n] = inflated
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
  found = {**found, **adapted}
  merged = jax.tree_util.tree_map_with_path(
      lambda p, x: x if path_name(p) in skipped else found[path_name(p)], initial)
  report = {'loaded': sorted(set(wanted) - skipped), 'skipped': sorted(skipped),
            'unexpected': sorted(unexpected), 'inflated': sorted(adapted)}
  return merged, report


def log_report(report: dict, source: str) -> None:
  logging.info('Loaded %d arrays from %s.', len(report['loaded']), source)
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
