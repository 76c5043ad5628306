"""Host input throughput: rs's training preprocessing vs a plain tf.data pipeline, same run.

  python -m rs.tools.photo_dataset --format=folder --out=/tmp/photos --per_class=64
  python -m rs.bench_input --config=configs/rs50_i160.py --data=/tmp/photos

Both pipelines read the same JPEG files (DIR/train/CLASS/*.jpg) and apply the official
training steps in the official order (inception crop, bicubic resize to the config's
resolution, flip, RandAugment N/M of the config, same RandAugment ops) into batches:
- 'plain': what a straightforward tf.data port does: decode the whole JPEG, crop,
  stateful random ops, tf.data's default options;
- 'rs': rs.data.streaming as training runs it: the crop fused into the decoder
  (`decode_and_crop_jpeg` reads only the window), stateless per-image seeds, a private
  thread pool of --threads with one thread per op.
They alternate in rounds of --batches batches; the medians give images/s, images/s per core
and the ratio rs / plain. --json prints one JSON object.
"""
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

from rs.data import randaugment, records, streaming, tf_preprocess


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
      image = randaugment.distort(image, data.randaugment_layers, data.randaugment_magnitude,
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


def images_per_second(iterator, batches: int, batch_size: int) -> float:
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def benchmark(config, data_dir: str, batch_size: int = 128, batches: int = 10,
              rounds: int = 5, threads: int | None = None) -> dict:
  """Alternating rounds of both pipelines; medians of images/s and the ratio rs / plain."""
  threads = threads or os.cpu_count()
  paths, labels = records.FolderRecords(data_dir).files('train')
  iterators = {
      'rs': iter(rs_dataset(data_dir, config, batch_size, threads).as_numpy_iterator()),
      'plain': iter(plain_dataset(paths, labels, config.data, batch_size,
                                  threads).as_numpy_iterator())}
  for it in iterators.values():  # warm up: tracing, thread pools, page cache
    images_per_second(it, 2, batch_size)
  rates = {name: [] for name in iterators}
  for _ in range(rounds):
    for name, it in iterators.items():
      rates[name].append(images_per_second(it, batches, batch_size))
  result = {'image_size': config.data.image_size,
            'randaugment': [config.data.randaugment_layers, config.data.randaugment_magnitude],
            'files': len(paths), 'batch_size': batch_size, 'threads': threads}
  for name, values in rates.items():
    result[f'{name}_images_per_sec'] = statistics.median(values)
    result[f'{name}_images_per_sec_per_core'] = statistics.median(values) / threads
  result['ratio_rs_over_plain'] = result['rs_images_per_sec'] / result['plain_images_per_sec']
  return result


def main(argv):
  from absl import flags
  del argv
  f = flags.FLAGS
  result = benchmark(f.config, f.data, f.batch_size, f.batches, f.rounds, f.threads)
  if f.json:
    print(json.dumps(result))
    return
  for name in ('plain', 'rs'):
    print(f"{name:6s} {result[f'{name}_images_per_sec']:8.1f} images/s "
          f"({result[f'{name}_images_per_sec_per_core']:.1f} per core)")
  print(f"rs / plain: {result['ratio_rs_over_plain']:.2f}x  ({result['files']} files, "
        f"{result['image_size']}px, RandAugment {result['randaugment']}, "
        f"{result['threads']} threads)")


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.')
  flags.DEFINE_string('data', None, 'A folder with train/CLASS/*.jpg (rs.tools.photo_dataset).')
  flags.DEFINE_integer('batch_size', 128, 'Images per batch.')
  flags.DEFINE_integer('batches', 10, 'Batches per timed round.')
  flags.DEFINE_integer('rounds', 5, 'Timed rounds per pipeline (alternating).')
  flags.DEFINE_integer('threads', None, 'tf.data threads for both; default: all CPU cores.')
  flags.DEFINE_bool('json', False, 'Print one JSON object.')
  flags.mark_flags_as_required(['config', 'data'])
  app.run(main)
