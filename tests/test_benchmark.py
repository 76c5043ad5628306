"""rs.tools.benchmark: what it reports, checked against independent figures.

The speed figures themselves are measurements, not test assertions (docs/performance.md);
these tests check that the tool measures the right programs and computes its numbers right:
parameter counts against the official ones and timm's, FLOPs against rs.tools.summary, memory
against the size of the state the train step must hold, ratios against their parts.
"""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, process_env
from configs import base
from rs.tools import benchmark, summary
from rs.models import official

pytest.importorskip('timm')


def _by(results, measurement, **match):
  found = [r for r in results if r['measurement'] == measurement
           and all(r.get(k) == v for k, v in match.items())]
  assert len(found) == 1, (measurement, match, found)
  return found[0]


def test_rs_against_timm_eager_at_a_small_size():
  """The plain ResNet-26 (both frameworks have it; RS-50 compiles twice as long) at 32px,
  batch 2, one round: rs and timm's eager model side by side, and a linear probe beside
  rs's full training."""
  results = benchmark.run(benchmark.rs_config(base.get_config(), 'resnet26', 32, 2, 'float32'),
                          compare=('timm',), timm_modes=('eager',), steps=1, rounds=1,
                          devices=1, linear_probe=True)
  model = _by(results, 'model')
  # The forward FLOPs are rs.tools.summary's count at this resolution.
  assert model['gflops_forward'] == pytest.approx(
      summary.summarize('resnet26', 32, compiled=False)['gflops'])
  assert _by(results, 'matmul_peak')['gflops_per_sec'] > 0

  rs_train = _by(results, 'rs/train', mode='jax.jit')
  timm_train = _by(results, 'timm/train', mode='eager')
  # timm's network is the same size: an independent count of the same architecture.
  assert timm_train['params'] == model['params']
  for r in (rs_train, timm_train, _by(results, 'rs/inference', mode='jax.jit'),
            _by(results, 'timm/inference', mode='eager')):
    assert r['images_per_sec'] == pytest.approx(2 / (r['step_ms'] / 1e3))
    per_image = model['gflops_forward'] * (3 if r['measurement'].endswith('train') else 1)
    assert r['achieved_gflops_per_sec'] == pytest.approx(per_image * r['images_per_sec'])
    assert r['fraction_of_matmul_peak'] == pytest.approx(
        r['achieved_gflops_per_sec'] / _by(results, 'matmul_peak')['gflops_per_sec'])
    assert r['compile_s'] > 0
  # The train step holds at least the parameters, their momentum and their EMA in float32.
  assert rs_train['memory_analysis_bytes'] > 3 * 4 * model['params']
  assert rs_train['device_peak_bytes'] is None  # the CPU reports no live memory
  for kind in ('train', 'inference'):
    ratio = _by(results, 'ratio', kind=kind, mode='jax.jit', over='timm/eager')['rs_over_timm']
    assert ratio == pytest.approx(_by(results, f'rs/{kind}', mode='jax.jit')['images_per_sec'] /
                                  _by(results, f'timm/{kind}')['images_per_sec'])
  # The probe is timed for training only; its FLOPs are one forward; its ratio to full training.
  probe = _by(results, 'rs/train', mode='linear probe')
  assert not [r for r in results if r['measurement'] == 'rs/inference'
              and r['mode'] == 'linear probe']
  assert probe['achieved_gflops_per_sec'] == pytest.approx(
      model['gflops_forward'] * probe['images_per_sec'])
  assert _by(results, 'ratio', mode='linear probe', over='rs/jax.jit')['rs_over_rs'] == (
      pytest.approx(probe['images_per_sec'] / rs_train['images_per_sec']))
  # Its step holds no backward activations: less memory than full training.
  assert probe['memory_analysis_bytes'] < rs_train['memory_analysis_bytes']


def test_an_efficientnet_is_benchmarked_with_its_recipe_against_timms_tf_port():
  """Without --config, an EfficientNet gets configs/efficientnet.py's recipe, so its network
  is the released one (BN epsilon 1e-3), which timm's tf_efficientnet_b* matches."""
  config = benchmark.rs_config(base.get_config(), 'efficientnet_b3', 64, 8, 'float32')
  assert (config.model.bn_epsilon, config.optimizer.name) == (1e-3, 'rmsprop_tf')
  assert config.data.image_size == 64 and config.batch_size == 8
  assert benchmark.timm_name('efficientnet_b3') == 'tf_efficientnet_b3'
  assert benchmark.timm_name('resnetrs50') == 'resnetrs50'


def test_compare_models_times_a_resnet_rs_and_an_efficientnet_side_by_side():
  """The command end to end, in its own process (two networks compiled: kept out of the test
  worker's memory)."""
  from rs.tools import compare_models
  done = subprocess.run(
      [sys.executable, '-m', 'rs.tools.compare_models', '--pairs=resnetrs14@32/efficientnet_b0@32',
       '--batch_size=2', '--devices=1', '--steps=1', '--rounds=1', '--json'],
      env=process_env(devices=1), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines()]
  assert [(r['model'], r['image_size']) for r in rows] == [('resnetrs14', 32),
                                                           ('efficientnet_b0', 32)]
  assert rows[1]['params'] == official.PARAMS['efficientnet_b0']
  assert all(r['ms_per_image'] > r['inference_ms_per_image'] > 0 and r['memory_gib'] > 0
             for r in rows)
  # Each network's training peak, measured in a process of its own: above a bare JAX process
  # (~0.2 GiB), below this machine.
  assert all(0.2 < r['peak_rss_gib'] < 24 for r in rows)
  for key in ('ms_per_image', 'inference_ms_per_image', 'memory_gib', 'peak_rss_gib'):
    assert rows[1][f'{key}_over_first'] == pytest.approx(rows[1][key] / rows[0][key])
  table = compare_models.markdown(rows)
  assert table.count('\n') == 3 and '| efficientnet_b0@32 |' in table
  assert compare_models.official_top1('resnetrs101', 192) == 81.2
  assert compare_models.official_top1('efficientnet_b3', 300) == 81.6
  assert compare_models.parse_pairs(compare_models.DEFAULT_PAIRS)[-1] == (
      ('resnetrs420', 320), ('efficientnet_b7', 600))
  with pytest.raises(Exception, match='give MODEL@RESOLUTION'):
    compare_models.parse_pairs(['resnetrs101/efficientnet_b3@300'])


def test_a_failed_memory_probe_says_why():
  from rs.tools import compare_models
  with pytest.raises(RuntimeError, match=r"probe of nonesuch@32 failed \(error: --pairs: "
                                         r"'nonesuch@32': give MODEL@RESOLUTION"):
    compare_models.peak_rss_in_own_process('nonesuch', 32, 2, 'float32', 1)


def test_median_step_times_alternates_and_takes_medians():
  calls = []

  def contender(name):
    return lambda: calls.append(name)

  result = benchmark.median_step_times({'a': contender('a'), 'b': contender('b')}, steps=2,
                                       rounds=2, warmup=1)
  assert calls == ['a', 'b'] + ['a', 'a', 'b', 'b'] * 2
  assert set(result) == {'a', 'b'} and all(v >= 0 for v in result.values())


def test_cli_benchmarks_a_config_and_prints_one_json_object_per_measurement():
  """The embedded default's config through the command line, batch shrunk."""
  out = subprocess.run(
      [sys.executable, '-m', 'rs.tools.benchmark', '--config=configs/fashion_mnist.py',
       '--config.batch_size=4', '--num_classes=10', '--steps=1', '--rounds=1', '--json',
       '--devices=1'], capture_output=True, text=True, check=True, timeout=300).stdout
  results = [json.loads(line) for line in out.splitlines()]
  assert [r['measurement'] for r in results] == [
      'model', 'matmul_peak', 'rs/train', 'rs/inference']
  # The config's architecture: width 0.25, one block per stage, 10 classes (0.69M params).
  assert results[0]['params'] == summary.summarize(
      'resnetrs14', 32, 10, compiled=False, width_multiplier=0.25)['params']
  assert results[0]['model'] == 'resnetrs14' and results[0]['batch_size'] == 4


def test_cli_times_several_device_counts_side_by_side():
  """--devices=1,2 in a process started with one CPU device: the tool makes the second device
  (XLA_FLAGS unset), times one rs contender per count, and each ratio is its parts' quotient."""
  env = process_env()
  out = subprocess.run(
      [sys.executable, '-m', 'rs.tools.benchmark', '--config=configs/tiny.py', '--num_classes=10',
       '--config.batch_size=4', '--steps=1', '--rounds=1', '--json', '--devices=1,2',
       '--kinds=train'], capture_output=True, text=True, check=True, timeout=300,
      env=env).stdout
  results = [json.loads(line) for line in out.splitlines()]
  one = _by(results, 'rs/train', mode='jax.jit x1')
  two = _by(results, 'rs/train', mode='jax.jit x2')
  assert (one['devices'], two['devices']) == (1, 2)
  ratio = _by(results, 'ratio', mode='jax.jit x2', over='rs/jax.jit x1')
  assert ratio['rs_over_rs'] == pytest.approx(two['images_per_sec'] / one['images_per_sec'])
  assert not [r for r in results if r['measurement'] == 'ratio' and r['mode'] == 'jax.jit x1']


def test_remat_settings_are_timed_side_by_side_with_their_memory():
  """--remat=none,block on the embedded default at batch 64: one rs train contender each, the
  forward once (remat changes only training), remat's memory below none's in XLA's analysis,
  its ratio the quotient of its parts; bad settings are one line."""
  from configs import fashion_mnist
  config = fashion_mnist.get_config()
  config.batch_size = 64
  results = benchmark.run(config, steps=1, rounds=1, devices=1, num_classes=10,
                          remat=('none', 'block'))
  none = _by(results, 'rs/train', mode='jax.jit remat=none')
  block = _by(results, 'rs/train', mode='jax.jit remat=block')
  assert (none['remat'], block['remat']) == ('none', 'block')
  assert block['memory_analysis_bytes'] < 0.9 * none['memory_analysis_bytes']  # 0.81x
  assert [r['mode'] for r in results if r['measurement'] == 'rs/inference'] == [
      'jax.jit remat=none']
  ratio = _by(results, 'ratio', kind='train', mode='jax.jit remat=block')
  assert ratio['rs_over_rs'] == pytest.approx(block['images_per_sec'] / none['images_per_sec'])
  for remat, says in ((('layer',), '--remat=layer: give distinct settings'),
                      (('block', 'block'), '--remat=block,block: give distinct')):
    with pytest.raises(ValueError, match=says):
      benchmark.run(config, steps=1, rounds=1, devices=1, remat=remat)


@pytest.mark.slow
def test_rs50_against_compiled_timm():
  """torch.compile takes minutes on 2 cores: run by scripts/benchmark.sh, not CI."""
  results = benchmark.run(benchmark.rs_config(base.get_config(), 'resnetrs50', 64, 4, 'float32'),
                          compare=('timm',), timm_modes=('eager', 'compiled'), steps=1,
                          rounds=1, devices=1)
  assert _by(results, 'model')['params'] == official.PARAMS['resnetrs50']
  for kind in ('train', 'inference'):
    rs_run = _by(results, f'rs/{kind}')
    eager, compiled = (_by(results, f'timm/{kind}', mode=m) for m in ('eager', 'compiled'))
    # torch.compile's first call compiles: it takes longer than eager's first call.
    assert compiled['compile_s'] > eager['compile_s']
    for timm_run in (eager, compiled):
      ratio = _by(results, 'ratio', kind=kind, over=f"timm/{timm_run['mode']}")['rs_over_timm']
      assert ratio == pytest.approx(rs_run['images_per_sec'] / timm_run['images_per_sec'])


def test_layer_bench_lists_rs50s_convolutions_and_times_both_frameworks():
  from rs.tools import layer_bench
  convs = layer_bench.rs50_convs(160)
  # Each stage's first 1x1 reads what the previous stage wrote (64 after the stem, then 4x).
  ins = {name: cin for name, _, cin, _, _, _ in convs}
  assert [ins[f'stage{i} 1x1 in'] for i in (1, 2, 3, 4)] == [64, 256, 512, 1024]
  assert {size for name, size, *_ in convs if name.startswith('stage4 1x1 out')} == {5}
  (row,) = layer_bench.run(image_size=32, batch_size=2, repeats=1, only='stage4 1x1 out')
  assert row['gflop_forward'] == pytest.approx(2 * 2 * 1 * 1 * 512 * 2048 / 1e9)
  jax_best = min(row['jax xla fwd+bwd ms'], row['jax matmul fwd+bwd ms'])
  assert row['fwd+bwd jax/torch time'] == pytest.approx(jax_best / row['torch fwd+bwd ms'])


def test_bench_predict_times_rs_predict_and_timm_on_the_same_photos():
  """Same weights, same files, same preprocessing: every top-1 class agrees."""
  pytest.importorskip('timm')
  out = subprocess.run([sys.executable, '-m', 'rs.tools.bench_predict', '--photos=6',
                        '--image_size=64', '--rounds=1', '--batch_size=4'], cwd=ROOT,
                       env=process_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  rows = [line for line in out.stdout.splitlines() if 'img/s' in line]
  assert [r.split()[0] for r in rows][-1] == 'timm' and rows[0].startswith('rs.predict x1 ')
  assert all('top-1 as timm: 100.0%' in r for r in rows)
  bad = subprocess.run([sys.executable, '-m', 'rs.tools.bench_predict', '--photos=0'], cwd=ROOT,
                       env=process_env(), capture_output=True, text=True, timeout=600)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
      'error: --photos=0')
