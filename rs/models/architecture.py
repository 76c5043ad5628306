"""One notion of a network's architecture: which fields define it, what a config's model
section builds, and the smallest input the built network can take.

Used by rs.weights (what model.json records), rs.validate (a resume must build the saved
parameters; the image must be large enough), rs.evaluate and rs.tools.benchmark.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from rs.models import registry

def _defaults(cls) -> dict:
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.default is not dataclasses.MISSING}


def _normal(field: str, value):
  """Values as create_model stores them (registry.stage_tuple)."""
  return registry.stage_tuple(value) if field == 'stage_sizes' else value


def registered(name: str) -> dict:
  """The full inference-field values (the family's `inference_fields`: shapes and BN epsilon)
  of a registered name, without overrides."""
  cls = registry.family(name)
  values = {**_defaults(cls), **registry.MODELS.get(name, {})}
  return {k: _normal(k, values.get(k)) for k in cls.inference_fields}


def resolved(model_section) -> dict:
  """The architecture a config's (or a saved config.json's) model section builds: the
  registered values, with the section's non-None fields over them (fields of the name's
  family only). Two sections that spell the same network differently resolve alike."""
  arch = registered(model_section.get('name'))
  for field in arch:
    if model_section.get(field) is not None:
      arch[field] = _normal(field, model_section.get(field))
  return arch


def of_config(model_section) -> dict:
  """create_model's arguments beyond the registered name that a config's model section
  changes (what model.json records): only fields whose value differs from the registered one."""
  base = registered(model_section.get('name'))
  return {k: v for k, v in resolved(model_section).items() if v != base[k]}


def shape_differences(saved_section, section) -> list[str]:
  """'model.FIELD saved X, now Y' for each field that changes the parameters' shapes."""
  old, new = resolved(saved_section), resolved(section)
  fields = registry.family(section.get('name')).shape_fields
  return [f'model.{k} saved {old.get(k)!r}, now {new.get(k)!r}' for k in fields
          if old.get(k) != new.get(k)]


def to_json(arch: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}


def from_json(arch: dict) -> dict:
  return {k: _normal(k, v) for k, v in arch.items()}


def example_input(model, channels: int = 3, side: int = 64) -> jnp.ndarray:
  """Zeros shaped like one input of the network: an image (1, side, side, channels), or for
  a 3D network a one-frame clip; for initialising it and reading its variables' shapes."""
  rank = getattr(model, 'input_rank', 4)
  return jnp.zeros((1,) * (rank - 3) + (side, side, channels))


@functools.lru_cache(maxsize=64)
def total_stride(model, channels: int = 3) -> int:
  """How many times the network shrinks its input: the input side over the smallest feature
  map it makes, read off the network itself (every module's output, shapes only). Maps of
  side 1 are pooled summaries (Squeeze-Excite), not the resolution, and are left out."""
  side = 4096

  def trace():
    return model.init_with_output(jax.random.key(0), example_input(model, channels, side),
                                  train=False, capture_intermediates=True)

  _, variables = jax.eval_shape(trace)
  maps = [x.shape[-3] for x in jax.tree.leaves(variables['intermediates'])
          if x.ndim == getattr(model, 'input_rank', 4) and x.shape[-3] > 1]
  return side // min(maps)


def min_image_size(model, channels: int = 3) -> int:
  """The smallest input side for which every stride-2 layer still halves something: the last
  one needs an input of at least 2 x 2, so the image must exceed half the total stride
  (17 px for ResNet-RS, total stride 32; 9 without a stem pool)."""
  return total_stride(model, channels) // 2 + 1
