"""rs.export: a run trained on 8 devices exported, then restored on 1 CPU device (locally and
through gs:// on a real GCS emulator), and its serving artifact called with any batch size.

Expected outputs come from the checkpoint restored as rs.train restores it (TrainState on the
8-device mesh) and the config's own network, not from rs.export's code.
"""
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import jax
import numpy as np
import optax
import pytest

from conftest import ROOT, process_env, tiny_config
from rs import checkpoint, evaluate, export, programs, sharding, step as step_lib
from rs import weights
from rs.data import preprocess, sources
TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # float32, other conv lowering ('auto' vs 'matmul')


@pytest.fixture(scope='module')
def run(tiny_run):
  """A tiny Fashion-MNIST run on the 8 fake devices (checkpoints at steps 3 and 6)."""
  return tiny_config(), *tiny_run


@pytest.fixture(scope='module')
def states(run):
  """{step: TrainState} restored exactly as rs.train resumes: onto the 8-device mesh."""
  config, workdir, _ = run
  mesh = sharding.create_mesh()
  training = programs.build_training(config, mesh, 10, (24, 24, 1), optax.constant_schedule(0.))
  rng = jax.random.key(config.seed)
  abstract = checkpoint.abstract_like(jax.eval_shape(training.init, rng), training.state_sharding)
  ckpt = checkpoint.Checkpointer(f'{workdir}/checkpoints', 1, 100)
  try:
    return {s: ckpt.restore(abstract, s) for s in (3, 6)}
  finally:
    ckpt.close()


@pytest.fixture(scope='module')
def images():
  """5 real Fashion-MNIST test images, resized to 24px as the in-memory pipeline does."""
  config = tiny_config()
  split = sources.load_array_split('fashion_mnist', 'test[:5]', config.data.data_dir,
                                   config.data.manual_dir)
  return preprocess.resize(split.images, config.data.image_size)


@pytest.fixture(scope='module')
def expected(run, states, images):
  """Logits of the step-6 EMA weights from the config's network, on the training mesh."""
  config = run[0]
  model = programs.build_model(config, 10, jax.device_count())
  state = states[6]
  variables = {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}
  x = step_lib.normalize(images, config.data.mean, config.data.std)
  return np.asarray(model.apply(variables, x, train=False))


def files(directory: str) -> dict[str, tuple[int, int]]:
  return {os.path.join(root, name): (os.stat(os.path.join(root, name)).st_size,
                                     os.stat(os.path.join(root, name)).st_mtime_ns)
          for root, _, names in os.walk(directory) for name in names}


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  """The run exported in-process (8 devices): EMA of the latest step with serving, raw of 3;
  and the workdir's files before and after, with an unfinished save of a later step in it."""
  _, workdir, _ = run
  unfinished = os.path.join(workdir, 'checkpoints', '9.orbax-checkpoint-tmp')
  os.makedirs(unfinished)
  with open(os.path.join(unfinished, 'part'), 'w') as f:
    f.write('a save in progress')
  before = files(workdir)
  out = tmp_path_factory.mktemp('exports')
  ema = export.export(workdir, str(out / 'ema'), serving=True, saved_model=True)
  raw = export.export(workdir, str(out / 'raw'), weights='raw', step=3)
  after = files(workdir)
  shutil.rmtree(unfinished)
  return out, ema, raw, (before, after)


def one_cpu_env(**extra) -> dict:
  """The environment of a process with one CPU device (conftest's 8 are an XLA flag)."""
  return process_env(JAX_PLATFORMS='cpu', **extra)


# Loads an export in a fresh process and writes the logits of the images in argv[2].
LOAD = """
import json, sys
import jax, numpy as np
from rs import export
model, variables, description = export.load(sys.argv[1])
images = np.load(sys.argv[2])
logits = export.inference_fn(model, variables, description)(images)['logits']
call, info = export.load_serving(sys.argv[1])
np.savez(sys.argv[3], logits=logits, serving1=call(images[:1])['logits'],
         serving5=call(images)['logits'])
print(json.dumps({'devices': jax.device_count(), 'platform': jax.default_backend(),
                  'on': sorted({str(d) for x in jax.tree.leaves(variables) for d in x.devices()}),
                  'meta': description.to_json(), 'serving': info}))
"""


def load_in_fresh_process(directory: str, images, tmp_path, env: dict) -> tuple[dict, dict]:
  np.save(tmp_path / 'images.npy', images)
  result = subprocess.run([sys.executable, '-c', LOAD, directory, str(tmp_path / 'images.npy'),
                           str(tmp_path / 'out.npz')], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1]), dict(np.load(tmp_path / 'out.npz'))


def test_export_from_8_devices_restores_on_one_cpu_device(exported, expected, images, tmp_path):
  out, meta, *_ = exported
  assert jax.device_count() == 8  # the run and the export happened on 8 devices
  report, logits = load_in_fresh_process(str(out / 'ema'), images, tmp_path, one_cpu_env())
  assert report['devices'] == 1 and report['platform'] == 'cpu'
  assert len(report['on']) == 1  # every array on the one device
  assert report['meta'] == meta.to_json()
  np.testing.assert_allclose(logits['logits'], expected, **TOLERANCE)
  np.testing.assert_allclose(logits['serving5'], expected, **TOLERANCE)
  np.testing.assert_allclose(logits['serving1'], expected[:1], **TOLERANCE)


def test_ema_and_raw_weights_are_the_checkpoints(exported, states):
  out, ema_meta, raw_meta, _ = exported
  _, ema, _ = export.load(str(out / 'ema'))
  _, raw, _ = export.load(str(out / 'raw'))
  assert (ema_meta.source['weights'], ema_meta.source['step']) == ('ema', 6)
  assert (raw_meta.source['weights'], raw_meta.source['step']) == ('raw', 3)
  equal = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  six, three = states[6], states[3]
  assert equal(ema['params'], six.ema_params) and equal(ema['batch_stats'], six.ema_batch_stats)
  assert equal(raw['params'], three.params) and equal(raw['batch_stats'], three.batch_stats)
  # The EMA and the raw weights differ in these short runs, so the checks above can tell them
  # apart.
  assert not equal(ema['params'], six.params) and not equal(raw['params'], three.ema_params)


def test_export_only_reads_the_workdir(exported):
  """Not a file of the run changes, and a save in progress (a training still running) stays."""
  before, after = exported[3]
  assert before == after
  assert any('9.orbax-checkpoint-tmp' in name for name in after)


FASHION_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                 'Sneaker', 'Bag', 'Ankle boot']  # the dataset's documented labels


def test_model_json_describes_the_network_and_its_input(run, exported):
  config, workdir, _ = run
  out, description, *_ = exported
  meta = json.loads((out / 'ema' / 'model.json').read_text())
  assert meta == description.to_json() and meta['version'] == weights.VERSION
  assert meta['model'] == 'resnetrs14' and meta['num_classes'] == 10
  assert meta['architecture'] == {'width_multiplier': 0.125}
  assert meta['source'] == {'tool': 'rs.export', 'workdir': workdir, 'step': 6,
                            'weights': 'ema', 'train_dtype': 'float32'}
  assert meta['input'] == {'image_size': 24, 'channels': 1, 'mean': list(config.data.mean),
                           'std': list(config.data.std), 'method': 'resize',
                           'crop_padding': 32, 'crop_fraction': None, 'native_size': 28}
  assert meta['class_names'] == FASHION_NAMES
  assert meta['dataset'] == {'name': 'fashion_mnist', 'train_split': config.data.train_split,
                             'eval_split': 'test[:500]', 'data_dir': None}
  assert json.loads((out / 'ema' / 'config.json').read_text()) == json.loads(
      open(os.path.join(workdir, 'config.json')).read())


def test_a_run_from_before_model_json_is_described_the_same(run, exported, tmp_path):
  """Workdirs written before rs.train wrote model.json: export describes them from
  config.json, the checkpoint and the dataset, to the same description."""
  _, workdir, _ = run
  old = tmp_path / 'old_run'
  shutil.copytree(workdir, old, ignore=shutil.ignore_patterns('model.json', '*-tmp'))
  description = export.export(str(old), str(tmp_path / 'out'))
  want = exported[1]
  assert description == dataclasses.replace(want, source={**want.source, 'workdir': str(old)})


def test_class_names_of_a_folder_dataset_are_its_sorted_training_folders(tmp_path):
  for split, classes in (('train', ('tulip', 'daisy', 'rose')), ('validation', ('rose',))):
    for name in classes:
      (tmp_path / split / name).mkdir(parents=True)
  # label i = i-th folder of the training split
  assert sources.class_names('folder', str(tmp_path), 'train[:100]') == ['daisy', 'rose', 'tulip']
  assert sources.class_names('folder', str(tmp_path / 'gone')) is None


def test_rs_evaluate_scores_the_export_as_training_scored_the_ema(run, exported):
  """rs.evaluate (and init_from) read the export: the run's own final EMA evaluation, from
  model.json alone (its dataset and evaluation input) and with the run's config."""
  config, _, result = run
  out, *_ = exported
  for scores in (evaluate.evaluate_weights(str(out / 'ema')),
                 evaluate.evaluate_weights(str(out / 'ema'), config)):
    assert scores['num_examples'] == 500
    assert scores['top1'] == pytest.approx(result['ema_top1'], abs=1e-6)
    assert scores['loss'] == pytest.approx(result['ema_loss'], rel=1e-5)


def test_serving_export_has_a_polymorphic_batch(exported, expected, images):
  out, *_ = exported
  call, info = export.load_serving(str(out / 'ema'))
  assert info['input'] == {'shape': ['b', 24, 24, 1], 'dtype': 'uint8', 'layout': 'NHWC',
                           'preprocess': exported[1].input.to_json()}
  assert info['class_names'] == FASHION_NAMES
  assert set(info['platforms']) == {'cpu', 'cuda', 'tpu'}
  for n in (1, 5):
    result = call(images[:n])
    assert result['logits'].shape == (n, 10)
    np.testing.assert_allclose(result['logits'], expected[:n], **TOLERANCE)
    np.testing.assert_allclose(np.sum(result['probabilities'], -1), 1.0, rtol=1e-5)
  exported_fn = jax.export.deserialize(bytearray((out / 'ema/serving/model.jax_export')
                                                 .read_bytes()))
  assert str(exported_fn.in_avals[0].shape) == '(b, 24, 24, 1)'


def test_tf_saved_model_serves_any_batch(exported, expected, images):
  import tensorflow as tf
  out, *_ = exported
  assert export.load_serving(str(out / 'ema'))[1]['saved_model'] == 'saved_model'
  serve = tf.saved_model.load(str(out / 'ema/serving/saved_model')).signatures['serving_default']
  for n in (1, 5):
    result = serve(images=tf.constant(images[:n]))
    np.testing.assert_allclose(result['logits'].numpy(), expected[:n], **TOLERANCE)
    np.testing.assert_allclose(result['probabilities'].numpy().sum(-1), 1.0, rtol=1e-5)


# gs:// on a real GCS server: gcp-storage-emulator (PyPI), a JSON-API emulator, on localhost.

# Runs the emulator with two things GCS does that it lacks and tensorstore relies on (orbax's
# OCDBT manifest is read and written conditionally): the object's generation in the
# x-goog-generation header of a media download (without it tensorstore records generation 0,
# and its next conditional read fails with "Malformed StorageGeneration"), and the
# ifGenerationMatch / ifGenerationNotMatch preconditions (412 / 304) of reads and uploads.
EMULATOR = """
import sys
from http import HTTPStatus
from gcp_storage_emulator import __main__ as emulator, server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def generation(request, storage, name):
  try:
    return storage.get_file_obj(request.params['bucket_name'], name)['generation']
  except NotFound:
    return None


def failed(request, current, not_match=True):
  match = request.query.get('ifGenerationMatch', [None])[0]
  if match is not None and match != (current or '0'):  # 0: the object must not exist
    return HTTPStatus.PRECONDITION_FAILED
  if not_match and request.query.get('ifGenerationNotMatch', [None])[0] == current:
    return HTTPStatus.NOT_MODIFIED
  return None


def with_generation(download):
  def handler(request, response, storage, *args, **kwargs):
    current = generation(request, storage, request.params['object_id'])
    if current is not None:
      status = failed(request, current)
      if status:
        response.status = status
        return None
      response['x-goog-generation'] = current
    return download(request, response, storage, *args, **kwargs)
  return handler


def with_precondition(insert):
  def handler(request, response, storage, *args, **kwargs):
    name = request.query.get('name', [None])[0]
    status = name and failed(request, generation(request, storage, name), not_match=False)
    if status:
      response.status = status
      return None
    return insert(request, response, storage, *args, **kwargs)
  return handler


patched = {objects.download: with_generation(objects.download),
           objects.insert: with_precondition(objects.insert)}
objects.download = patched[objects.download]  # objects.get calls it for ?alt=media
for _, methods in server.HANDLERS:
  for method, handler in methods.items():
    methods[method] = patched.get(handler, handler)
emulator.main(sys.argv[1:])
"""

def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture
def gcs(tmp_path):
  """(URL, bucket) of a GCS emulator started for the test, stopped after it."""
  port, bucket = free_port(), 'rs-export-test'
  url = f'http://127.0.0.1:{port}'
  log = open(tmp_path / 'emulator.log', 'w')
  server = subprocess.Popen(
      [sys.executable, '-c', EMULATOR, 'start', '--host', '127.0.0.1', '--port', str(port),
       '--in-memory', '--default-bucket', bucket], stdout=log, stderr=log)
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        urllib.request.urlopen(f'{url}/storage/v1/b/{bucket}', timeout=1)
        break
      except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f'the GCS emulator did not start: {open(log.name).read()[-2000:]}')
        time.sleep(0.2)
    yield url, bucket
  finally:
    server.terminate()
    server.wait(timeout=30)
    log.close()


def emulator_env(url: str) -> dict:
  """Points every gs:// client rs uses at the emulator, with no credentials.

  tensorstore (orbax's array files): TENSORSTORE_GCS_HTTP_URL and a fixed test token.
  etils.epath (orbax's metadata, model.json): tf.io.gfile's GCS client has fixed Google
  endpoints, so EPATH_USE_TF=false selects epath's fsspec backend, gcsfs, which honours
  STORAGE_EMULATOR_HOST (anonymous; its zonal-bucket probe over gRPC off).
  """
  return one_cpu_env(TENSORSTORE_GCS_HTTP_URL=url, GOOGLE_AUTH_TOKEN_FOR_TESTING='emulator',
                     STORAGE_EMULATOR_HOST=url, EPATH_USE_TF='false', FSSPEC_GCS_TOKEN='anon',
                     GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false', NO_GCE_CHECK='true')


def emulator_objects(url: str, bucket: str, prefix: str) -> list[str]:
  query = urllib.parse.urlencode({'prefix': prefix})
  with urllib.request.urlopen(f'{url}/storage/v1/b/{bucket}/o?{query}') as response:
    return sorted(item['name'] for item in json.load(response).get('items', []))


def emulator_read(url: str, bucket: str, name: str) -> bytes:
  quoted = urllib.parse.quote(name, safe='')
  with urllib.request.urlopen(f'{url}/download/storage/v1/b/{bucket}/o/{quoted}?alt=media') as r:
    return r.read()


def test_export_to_gcs_and_load_back(run, exported, expected, images, gcs, tmp_path):
  """The CLI on 1 CPU device writes to gs://; a fresh process loads it back from there."""
  _, workdir, _ = run
  url, bucket = gcs
  env = emulator_env(url)
  out = f'gs://{bucket}/exports/tiny'
  result = subprocess.run([sys.executable, '-m', 'rs.export', f'--workdir={workdir}',
                           f'--out={out}', '--serving'], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])['step'] == 6
  # The files are in the emulator's bucket (read over its HTTP API, not through rs).
  names = emulator_objects(url, bucket, 'exports/tiny/')
  for name in ('model.json', 'config.json', 'serving/model.jax_export', 'serving/serving.json',
               'variables/_METADATA'):
    assert f'exports/tiny/{name}' in names, names
  remote_meta = json.loads(emulator_read(url, bucket, 'exports/tiny/model.json'))
  # The same description as the local export (but for the workdir's path)
  assert remote_meta == exported[1].to_json()
  assert not os.path.exists(os.path.join(ROOT, 'gs:'))  # nothing went to a local 'gs:' folder

  report, logits = load_in_fresh_process(out, images, tmp_path, env)
  assert report['devices'] == 1 and report['meta'] == remote_meta
  np.testing.assert_allclose(logits['logits'], expected, **TOLERANCE)
  np.testing.assert_allclose(logits['serving5'], expected, **TOLERANCE)
  np.testing.assert_allclose(logits['serving1'], expected[:1], **TOLERANCE)


def test_exporting_over_an_export_replaces_it_whole(run, exported, tmp_path):
  """Weights of another step, and no serving artifact left from the earlier export."""
  out = tmp_path / 'again'
  shutil.copytree(exported[0] / 'ema', out)
  meta = export.export(run[1], str(out), step=3)
  assert json.loads((out / 'model.json').read_text())['source']['step'] == 3
  assert meta.source['step'] == 3
  assert not (out / 'serving').exists()


def test_another_runs_export_is_replaced_only_with_overwrite(run, exported, tmp_path):
  """--out holding weights this run did not export (another run's, converted ones) is refused
  in one line naming them, and kept; --overwrite replaces them."""
  other = tmp_path / 'other_run'
  shutil.copytree(run[1], other)
  out = tmp_path / 'theirs'
  shutil.copytree(exported[0] / 'ema', out)  # exported from run[1], not from `other`
  before = (out / 'model.json').read_text()
  with pytest.raises(export.ExportError, match=(
      rf"--out={out} holds other weights \(resnetrs14 with 10 classes, written by rs.export "
      rf"from {run[1]}\): give a new directory, or add --overwrite")):
    export.export(str(other), str(out))
  assert (out / 'model.json').read_text() == before
  meta = export.export(str(other), str(out), overwrite=True)
  assert meta.source['workdir'] == str(other)
  assert json.loads((out / 'model.json').read_text())['source']['workdir'] == str(other)


def test_damaged_latest_checkpoint_is_skipped_not_moved(run, states, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(run[1], workdir)
  arrays = [os.path.join(root, name) for root, _, names in
            os.walk(workdir / 'checkpoints' / '6' / 'state') for name in names]
  largest = max(arrays, key=os.path.getsize)
  with open(largest, 'r+b') as f:  # flip the middle bytes of step 6's largest array file
    f.seek(os.path.getsize(largest) // 2)
    middle = f.read(64)
    f.seek(-len(middle), 1)
    f.write(bytes(b ^ 0xFF for b in middle))
  meta = export.export(str(workdir), str(tmp_path / 'out'))
  assert meta.source['step'] == 3
  _, variables, _ = export.load(str(tmp_path / 'out'))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, variables['params'],
                                          states[3].ema_params)))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']


# Errors: one line naming the fix.

def test_workdir_without_checkpoints_is_one_line(run, tmp_path):
  workdir = tmp_path / 'fresh'
  workdir.mkdir()
  shutil.copy(os.path.join(run[1], 'config.json'), workdir / 'config.json')
  result = subprocess.run([sys.executable, '-m', 'rs.export', f'--workdir={workdir}',
                           f'--out={tmp_path / "out"}'], env=one_cpu_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: no checkpoint in {workdir}/checkpoints: train first')
  assert 'Traceback' not in result.stderr


def test_bad_arguments_are_clear_errors(run, tmp_path):
  _, workdir, _ = run
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  with pytest.raises(export.ExportError, match=r'cannot write --out=.*a_file/export'):
    export.export(workdir, str(a_file / 'export'))
  with pytest.raises(export.ExportError, match='is a file: give a directory'):
    export.export(workdir, str(a_file))
  with pytest.raises(export.ExportError, match='holds files but no export'):
    export.export(workdir, workdir)  # would mix the export into the run directory
  with pytest.raises(export.ExportError, match=r'no checkpoint of step 4 .*\[3, 6\]'):
    export.export(workdir, str(tmp_path / 'out'), step=4)
  with pytest.raises(export.ExportError, match=r"weights='best': use one of \('ema', 'raw'\)"):
    export.export(workdir, str(tmp_path / 'out'), weights='best')
  with pytest.raises(export.ExportError, match='config.json does not exist'):
    export.export(str(tmp_path), str(tmp_path / 'out'))
  with pytest.raises(weights.WeightsError, match='holds no rs weights'):
    export.load(str(tmp_path))
