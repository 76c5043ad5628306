"""rs.predict on real photographs against timm's model in eval mode, side by side in one process.

  python -m rs.tools.bench_predict --model=resnetrs50 --photos=200

Writes --photos JPEG files (500 x 375 crops of scikit-image's sample photographs,
rs.tools.photo_dataset), gives timm's --model with seeded random weights to rs through
rs.convert, and times in alternating rounds (medians), each over all the files:
  rs.predict xN   rs.predict's Predictor.predict(paths) on N devices (1, and one per core: what
                  rs.predict does by default): decode, the official eval crop, forward,
                  softmax, top-5
  timm eager      the same files read by the same preprocessing (the Predictor's), then timm's
                  forward and softmax in eval mode, in batches of --batch_size, channels-last,
                  torch using every core
Prints images/s, the ratios to timm, and the share of files whose top-1 class each rs setting
gives as timm does (the same weights: 100% expected), with the number of distinct top-1 classes
(random weights still tell the photographs apart).
"""
import os
import statistics
import tempfile
import time

import numpy as np
from absl import flags

from rs import cli, sharding


def write_photos(directory: str, count: int) -> list[str]:
  """`count` JPEG photographs under `directory`, spread over the sample photographs."""
  from rs.tools import photo_dataset
  per_class = -(-count // len(photo_dataset.PHOTOS))
  items = photo_dataset.examples(len(photo_dataset.PHOTOS), per_class)[:count]
  photo_dataset.write_folder(directory, 'photos', items)
  return sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                for name in names)


def timm_weights(model_name: str, out: str, image_size: int | None, seed: int = 0):
  """timm's `model_name` with seeded random weights, in eval mode, and the same weights as an rs
  weights directory at `out` (rs.convert)."""
  import timm
  import torch

  from rs import convert
  torch.manual_seed(seed)
  model = timm.create_model(model_name, pretrained=False).eval()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'model.pth')
    torch.save(model.state_dict(), path)
    convert.convert_file(path, model_name, out, image_size)
  return model


def main(argv):
  del argv
  f = flags.FLAGS
  if f.photos < 1 or f.batch_size < 1 or f.rounds < 1:
    raise cli.UserError(f'--photos={f.photos} --batch_size={f.batch_size} --rounds={f.rounds}: '
                        'give 1 or more of each')
  cores = sharding.cpu_cores()
  sharding.request_cpu_devices(cores)  # before JAX starts
  import jax
  import torch

  from rs import predict
  torch.set_num_threads(cores)
  with tempfile.TemporaryDirectory() as tmp:
    paths = write_photos(os.path.join(tmp, 'photos'), f.photos)
    model = timm_weights(f.model, os.path.join(tmp, 'weights'), f.image_size)
    model = model.to(memory_format=torch.channels_last)
    counts = sorted({1, len(jax.local_devices())})
    predictors = {f'rs.predict x{n}': predict.Predictor(
        os.path.join(tmp, 'weights'), f.image_size, f.batch_size, jax.local_devices()[:n])
        for n in counts}
    prepare = next(iter(predictors.values())).prepare
    top1 = {}

    def rs_run(name, predictor):
      def run():
        top1[name] = [r['top5'][0]['index'] for r in predictor.predict(paths)]
      return run

    def timm_run():
      images = np.stack([prepare.read(p) for p in paths])
      x = torch.from_numpy((images - np.float32(prepare.mean)) / np.float32(prepare.std))
      x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
      with torch.inference_mode():
        probabilities = torch.cat([torch.softmax(model(x[i:i + f.batch_size]), -1)
                                   for i in range(0, len(x), f.batch_size)])
      top1['timm eager'] = probabilities.argmax(-1).tolist()

    contenders = {name: rs_run(name, p) for name, p in predictors.items()}
    contenders['timm eager'] = timm_run
    times = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up: compilation, caches
      fn()
    for _ in range(f.rounds):
      for name, fn in contenders.items():
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
  print(f'{f.model} @{prepare.image_size}, {len(paths)} JPEG photographs (500 x 375), batch '
        f'{f.batch_size}, {cores} cores, float32, median of {f.rounds} rounds')
  timm_rate = len(paths) / statistics.median(times['timm eager'])
  for name, values in times.items():
    rate = len(paths) / statistics.median(values)
    agree = np.mean(np.asarray(top1[name]) == np.asarray(top1['timm eager']))
    print(f'{name:<16} {rate:7.1f} img/s  {rate / timm_rate:.2f}x timm eager  '
          f'top-1 as timm: {agree:.1%} ({len(set(top1[name]))} classes)')


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('model', 'resnetrs50', 'A model name both rs and timm have.')
  flags.DEFINE_integer('image_size', None, "Input side; default: the released resolution.")
  flags.DEFINE_integer('photos', 200, 'JPEG photographs to predict.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass (rs.predict --batch_size).')
  flags.DEFINE_integer('rounds', 3, 'Timed rounds over all the photographs.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
