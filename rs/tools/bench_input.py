"""Host input throughput: rs's training preprocessing vs a plain tf.data pipeline, same run.

  python -m rs.tools.photo_dataset --format=folder --out=/tmp/photos --per_class=64
  python -m rs.tools.bench_input --config=configs/rs50_i160.py --data=/tmp/photos

Both pipelines read the same JPEG files (DIR/train/CLASS/*.jpg) and apply the official
training steps in the official order: inception crop (same sampling parameters, centre crop
when the sampler gives up), TF1 bicubic resize to the config's resolution, random flip,
RandAugment with the config's N and M over the same 16 ops with the same arguments, into
uint8 batches. What differs:

| | 'plain' (a straightforward tf.data port) | 'rs' (rs.data.streaming, as training runs) |
|---|---|---|
| decode | whole JPEG, then `tf.slice` the crop | `decode_and_crop_jpeg`: only the window |
| randomness | stateful crop sampler and flip | stateless, from (seed, position) |
| op choice | per layer 16 `tf.cond`s in a row (official) | per layer one `tf.switch_case` |
| RandAugment ops | rs.data.randaugment_plain: per-channel loops, `tf.where` masks, depthwise conv (Sharpness), projective transform (Translate) | rs.data.randaugment: the same ops reformulated for TF's CPU kernels, bit-identical outputs (tests/test_randaugment_fast.py; Sharpness exact, within ceil(|1 - factor|) levels of the convolution) |
| tf.data | default options, private pool of --threads | private pool of --threads, one thread per op, deterministic order |

Both RandAugments draw the op choice, signs and Cutout centres from the same seeds in the
same way; the crops differ (stateful vs stateless sampling), which only changes the work by
the crop size distribution, the same for both.

Measurement: the pipelines alternate for --rounds rounds; each round starts a fresh iterator,
discards --warmup batches and times --batches batches, then drops the iterator, so that no
pipeline works in the background while the other is timed. Medians give images/s (wall clock,
and per core: / --threads) and images per CPU-second (process CPU time, all threads), which
other load on the machine does not change; and both ratios rs / plain. --json prints one
JSON object.
"""
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf
from absl import flags

from rs import cli, validate
from rs.data import randaugment, randaugment_plain, records, streaming
from rs.data import tf_preprocess
from rs.errors import UserError


def cond_chain_randaugment(image, num_layers: int, magnitude: float, seed):
  """RandAugment dispatched as the official code does: per layer, 16 `tf.cond`s in a row, each
  applying its op when it is the chosen one, with the plain op formulations
  (rs.data.randaugment_plain). Same seeds and draws as rs.data.randaugment.distort, so the
  same images as rs's RandAugment."""
  for layer in range(num_layers):
    choice_seed, op_seed = randaugment.layer_seeds(seed, layer)  # distort's very draws
    chosen = randaugment.choose_op(choice_seed)
    for i, name in enumerate(randaugment.OPS):
      image = tf.cond(tf.equal(chosen, i),
                      lambda name=name, x=image: randaugment.apply_op(
                          x, name, magnitude, op_seed, ops=randaugment_plain.OP_FUNCTIONS),
                      lambda x=image: x)
  return image


def plain_dataset(paths: np.ndarray, labels: np.ndarray, data, batch_size: int,
                  threads: int) -> tf.data.Dataset:
  """The official steps, written plainly: decode everything, then crop."""
  image_size = data.image_size

  def preprocess(path, label, index):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=tf_preprocess.MIN_OBJECT_COVERED,
        aspect_ratio_range=tf_preprocess.ASPECT_RATIO_RANGE,
        area_range=tf_preprocess.AREA_RANGE, max_attempts=tf_preprocess.MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, size)
    whole = tf.reduce_all(tf.equal(tf.shape(crop), tf.shape(image)))
    top, left, side = tf_preprocess.center_crop_window(tf.shape(image)[0], tf.shape(image)[1],
                                                      image_size, data.eval_crop_padding)
    crop = tf.cond(whole, lambda: tf.image.crop_to_bounding_box(image, top, left, side, side),
                   lambda: crop)
    image = tf_preprocess.resize_bicubic(crop, image_size)
    image = tf.image.random_flip_left_right(image)
    if data.randaugment_layers:
      image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
      image = cond_chain_randaugment(image, data.randaugment_layers,
                                     data.randaugment_magnitude,
                                     tf.stack([tf.constant(0, tf.int64), index]))
    return {'image': image, 'label': label}

  ds = tf.data.Dataset.from_tensor_slices((paths, labels, tf.range(len(paths),
                                                                    dtype=tf.int64)))
  ds = ds.repeat().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads  # the same cores as rs's
  return ds.batch(batch_size, drop_remainder=True).prefetch(2).with_options(options)


def rs_dataset(data_dir: str, config, batch_size: int, threads: int) -> tf.data.Dataset:
  d = config.data
  pipeline = streaming.StreamingPipeline(
      records.FolderRecords(data_dir), 'train', 'train', d.image_size, batch_size, batch_size,
      randaugment_layers=d.randaugment_layers, randaugment_magnitude=d.randaugment_magnitude,
      resize_method=d.resize_method, eval_crop_padding=d.eval_crop_padding,
      shuffle_buffer=d.shuffle_buffer, threads=threads, host=0, hosts=1)
  return pipeline.train_dataset(0)


def timed_round(dataset: tf.data.Dataset, batch_size: int, batches: int,
                warmup: int = 2) -> tuple[float, float]:
  """(images/s, images per CPU-second) of `batches` batches from a fresh iterator of
  `dataset`, after `warmup` untimed ones (thread pools, autotuning, page cache).

  The iterator is dropped on return, which stops its threads: an iterator left alive keeps
  filling its buffers in the background (measured: ~4 batches' work, 1.3-2 CPU-seconds, for
  either pipeline here), on the cores the other pipeline's round is timing. CPU time is the
  process's (all threads): images per CPU-second do not depend on other load on the machine.
  """
  iterator = dataset.as_numpy_iterator()
  for _ in range(warmup):
    next(iterator)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(iterator)
  images = batches * batch_size
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def _undecodable(path: str) -> str | None:
  """Why the image at `path` cannot be decoded; None if it can."""
  try:
    with open(path, 'rb') as file:
      return tf_preprocess.decode_error(file.read()) or None
  except OSError as e:
    return f'unreadable ({e})'


def readable_files(data_dir: str, sample: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """The class folder's training files and labels; UserError if there are none (raised by
  FolderRecords), or if none of the first `sample` decodes (both pipelines would only fail, on a
  file they cannot name)."""
  with validate.data_errors():
    paths, labels = records.FolderRecords(data_dir).files('train')
  reasons = [_undecodable(p) for p in paths[:sample]]
  if all(reasons):
    raise UserError(f'--data={data_dir}: none of the first {len(reasons)} images decodes, e.g. '
                    f'{paths[0]}: {reasons[0]}')
  return paths, labels


def benchmark(config, data_dir: str, batch_size: int = 128, batches: int = 10,
              rounds: int = 5, threads: int | None = None, warmup: int = 2) -> dict:
  """Alternating rounds of both pipelines; medians of images/s, images per CPU-second and
  the ratios rs / plain."""
  threads = threads or os.cpu_count()
  paths, labels = readable_files(data_dir)
  datasets = {'rs': rs_dataset(data_dir, config, batch_size, threads),
              'plain': plain_dataset(paths, labels, config.data, batch_size, threads)}
  rates = {name: [] for name in datasets}
  cpu_rates = {name: [] for name in datasets}
  for _ in range(rounds):
    for name, dataset in datasets.items():
      rate, cpu_rate = timed_round(dataset, batch_size, batches, warmup)
      rates[name].append(rate)
      cpu_rates[name].append(cpu_rate)
  result = {'image_size': config.data.image_size,
            'randaugment': [config.data.randaugment_layers, config.data.randaugment_magnitude],
            'files': len(paths), 'batch_size': batch_size, 'threads': threads}
  for name in datasets:
    result[f'{name}_images_per_sec'] = statistics.median(rates[name])
    result[f'{name}_images_per_sec_per_core'] = statistics.median(rates[name]) / threads
    result[f'{name}_images_per_cpu_sec'] = statistics.median(cpu_rates[name])
  result['ratio_rs_over_plain'] = result['rs_images_per_sec'] / result['plain_images_per_sec']
  result['cpu_ratio_rs_over_plain'] = (result['rs_images_per_cpu_sec'] /
                                       result['plain_images_per_cpu_sec'])
  return result


def main(argv):
  del argv
  f = flags.FLAGS
  result = benchmark(f.config, f.data, f.batch_size, f.batches, f.rounds, f.threads, f.warmup)
  if f.json:
    print(json.dumps(result))
    return
  for name in ('plain', 'rs'):
    print(f"{name:6s} {result[f'{name}_images_per_sec']:8.1f} images/s "
          f"({result[f'{name}_images_per_sec_per_core']:.1f} per core), "
          f"{result[f'{name}_images_per_cpu_sec']:.1f} images per CPU-second")
  print(f"rs / plain: {result['ratio_rs_over_plain']:.2f}x images/s, "
        f"{result['cpu_ratio_rs_over_plain']:.2f}x per CPU-second  ({result['files']} files, "
        f"{result['image_size']}px, RandAugment {result['randaugment']}, "
        f"{result['threads']} threads)")


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.')
  flags.DEFINE_string('data', None, 'A folder with train/CLASS/*.jpg (rs.tools.photo_dataset).')
  flags.DEFINE_integer('batch_size', 128, 'Images per batch.', lower_bound=1)
  flags.DEFINE_integer('batches', 10, 'Batches per timed round.', lower_bound=1)
  flags.DEFINE_integer('rounds', 5, 'Timed rounds per pipeline (alternating).', lower_bound=1)
  flags.DEFINE_integer('warmup', 2, 'Untimed batches at the start of each round.', lower_bound=0)
  flags.DEFINE_integer('threads', None, 'tf.data threads for both; default: all CPU cores.',
                       lower_bound=1)
  flags.DEFINE_bool('json', False, 'Print one JSON object.')
  flags.mark_flags_as_required(['config', 'data'])


if __name__ == '__main__':
  define_flags()
  cli.run(main)
