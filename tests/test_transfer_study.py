"""The transfer study's tiny version (scripts/transfer_study.sh, docs/transfer.md): both upstream
recipes pretrain, export, transfer by probe and by fine-tuning, and the report reads the runs."""
import jax
import numpy as np
import pytest

from configs import transfer_fashion_mnist as study
from rs import export, sharding, train, validate, weights
from rs.tools import transfer_report


def test_the_two_upstream_recipes_differ_only_as_the_paper_says():
  standard, rs = study.get_config('standard'), study.get_config('rs')
  assert rs.model.name == standard.model.name == 'resnet14'  # vanilla: no SE, no ResNet-D
  assert (rs.train_epochs, rs.batch_size, rs.data.image_size) == (
      standard.train_epochs, standard.batch_size, standard.data.image_size)
  recipe = lambda c: (c.optimizer.schedule, c.optimizer.weight_decay, c.label_smoothing,
                      c.model.dropout_rate, c.data.randaugment_layers)
  flat = lambda c: {k: v for k, v in c.to_dict().items() if k not in ('optimizer', 'model',
                                                                          'data')}
  assert flat(rs) == {**flat(standard), 'label_smoothing': 0.1}  # besides the recipe's five
  assert recipe(standard) == ('step', 1e-4, 0.0, 0.0, 0)
  assert (rs.optimizer.schedule, rs.optimizer.weight_decay, rs.label_smoothing,
          rs.model.dropout_rate, rs.data.randaugment_layers) == ('cosine', 4e-5, 0.1, 0.25, 2)
  for recipe in (standard, rs):  # no stochastic depth, no EMA in either
    assert recipe.model.stochastic_depth_rate == 0 and recipe.ema_decay == 0
  with pytest.raises(ValueError, match='digits_probe'):
    study.get_config('digits_linear')


def _tiny(config, steps, **splits):
  config.train_steps, config.warmup_steps = steps, 1
  config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = steps
  for field, split in splits.items():
    config.data[field] = split
  return config


def test_tiny_study_pretrains_probes_fine_tunes_and_reports(tmp_path):
  runs = tmp_path / 'runs'
  for recipe in study.UPSTREAM:
    config = _tiny(study.get_config(recipe), 4, train_split='train[:1024]',
                   eval_split='test[:200]')
    config.batch_size, config.eval_batch_size = 128, 200
    train.train_and_evaluate(config, str(runs / f'up_{recipe}_seed0'))
    (runs / f'up_{recipe}_seed0/wall.txt').write_text('1')  # as the script marks a finished run
    export.export(str(runs / f'up_{recipe}_seed0'), str(runs / f'up_{recipe}_seed0/weights'))
  upstream = weights.read_variables(str(runs / 'up_rs_seed0/weights'))
  one_device = sharding.create_mesh(jax.devices()[:1])
  for row in (f'{d}_{m}' for d in study.DOWNSTREAM for m in study.MODES):
    config = study.get_config(row)
    config.init_from = str(runs / 'up_rs_seed0/weights')
    validate.check_config(config, one_device)  # every row fits the upstream weights
  # Training: one mode per dataset.
  for dataset, mode, eval_split in (('digits', 'probe', 'test[:100]'),
                                    ('lfw_faces', 'finetune', 'test')):
    config = _tiny(study.get_config(f'{dataset}_{mode}'), 4, eval_split=eval_split)
    config.init_from = str(runs / 'up_rs_seed0/weights')
    workdir = runs / f'rs_{dataset}_{mode}_seed0'
    result = train.train_and_evaluate(config, str(workdir))
    assert 0 <= result['top1'] <= 1
    export.export(str(workdir), str(tmp_path / f'{dataset}_{mode}'))
    tuned = weights.read_variables(str(tmp_path / f'{dataset}_{mode}'))
    backbone = lambda v: {k: x for k, x in v['params'].items() if k != 'head'}
    same = jax.tree.map(np.array_equal, backbone(tuned), backbone(upstream))
    # The probe leaves the backbone and its BN statistics as pretrained; fine-tuning moves it.
    assert all(jax.tree.leaves(same)) == (mode == 'probe')
    if mode == 'probe':
      assert all(jax.tree.leaves(jax.tree.map(np.array_equal, tuned['batch_stats'],
                                              upstream['batch_stats'])))
  report = transfer_report.format_report(transfer_report.collect(str(runs)))
  assert '| standard |' in report and '| rs |' in report  # the upstream table
  assert '| digits | probe |' not in report  # no standard downstream runs: no comparison


def test_report_chooses_rates_on_minival_and_weighs_the_difference_against_seed_noise(tmp_path):
  import json

  def run(name, top1, wall=30):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'eval.json').write_text(json.dumps([{'top1': 0.1}, {'top1': top1}]))
    (tmp_path / name / 'wall.txt').write_text(str(wall))

  for lr, (a, b) in {'0.1': (0.90, 0.80), '0.4': (0.85, 0.95)}.items():  # means 0.85 and 0.90
    run(f'tune_standard_digits_probe_lr{lr}', a)
    run(f'tune_rs_digits_probe_lr{lr}', b)
  for seed, (a, b) in enumerate([(0.80, 0.90), (0.82, 0.91), (0.81, 0.92)]):
    run(f'standard_digits_probe_seed{seed}', a)
    run(f'rs_digits_probe_seed{seed}', b)
  for seed, (a, b) in enumerate([(0.80, 0.81), (0.84, 0.79)]):
    run(f'standard_lfw_faces_finetune_seed{seed}', a, wall=10)
    run(f'rs_lfw_faces_finetune_seed{seed}', b, wall=20)
  run('scratch_lfw_faces_finetune_seed0', 0.7)
  (tmp_path / 'rs_digits_finetune_seed0').mkdir()  # still training: left out
  (tmp_path / 'rs_digits_finetune_seed0/eval.json').write_text(json.dumps([{'top1': 0.5}]))
  found = transfer_report.collect(str(tmp_path))
  assert transfer_report.chosen_rates(found['tune']) == {('digits', 'probe'): 0.4}
  report = transfer_report.format_report(found)
  assert ('| digits | probe | 81.00% (80.00-82.00) | 91.00% (90.00-92.00) | +10.00 | RS better'
          in report)
  assert ('| lfw_faces | finetune | 82.00% (80.00-84.00) | 80.00% (79.00-81.00) | -2.00 | '
          'within seed noise (the ranges overlap) | 70.00% | 15 s |') in report
  assert '| digits | probe | 0.4 | 85.00% | 95.00% | yes |' in report
  assert 'digits | finetune' not in report
