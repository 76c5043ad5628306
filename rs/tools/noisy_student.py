"""Noisy Student rounds: a teacher, its pseudo-labels, a student, which teaches the next round.

  python -m rs.tools.noisy_student --config=configs/fashion_mnist_semi.py --out=runs/semi \\
      --data=fashion_mnist --split='train[6000:54000]' --rounds=2 [--ratio=1] [--per_class=N]

OUT/round0 is the teacher, the config trained on its labeled split alone. Round r >= 1
labels the unlabeled images with round r-1's EMA weights (rs.pseudo_label into OUT/pseudo_r)
and trains the config as a student on its labeled split plus those pseudo-labels
(data.pseudo.ratio = --ratio) in OUT/round_r. Every step resumes: run the same command again
after an interruption, and finished runs and shards are kept. The student has the config's
noise (augmentation, dropout, stochastic depth); give the config a larger model for an
equal-or-larger student. Prints one line per round and writes OUT/rounds.json.
"""
import json
import logging

from absl import app, flags
from ml_collections import config_flags

from rs import cli, pseudo_label, rundir
from rs.errors import UserError


def run_rounds(config, out: str, data: str, split: str | None, rounds: int,
               data_dir: str | None = None, ratio: float = 1.0, per_class: int | None = None,
               min_threshold: float = 0.3, top_k: int = 0, num_shards: int = 16) -> list[dict]:
  """Trains round 0 and `rounds` student rounds (module docstring); their results."""
  from rs import sharding, train, validate
  if rounds < 0:
    raise UserError(f'--rounds={rounds}: give 0 (the teacher alone) or more')
  base = rundir.path(out)

  def student_config(r: int):
    student = config.copy_and_resolve_references()
    student.data.pseudo.update({'dir': str(base / f'pseudo{r}'), 'ratio': ratio})
    return student

  if rounds:  # a student config that cannot work fails now, not after the teacher's training
    validate.check_config(student_config(1), sharding.create_mesh())
  teacher_config = config.copy_and_resolve_references()
  teacher_config.data.pseudo.ratio = 0.0
  results = [{'round': 0, 'workdir': str(base / 'round0'),
              **train.train_and_evaluate(teacher_config, str(base / 'round0'))}]
  for r in range(1, rounds + 1):
    manifest = pseudo_label.label(results[-1]['workdir'], data, split, data_dir,
                                  str(base / f'pseudo{r}'), num_shards=num_shards, top_k=top_k,
                                  per_class=per_class, min_threshold=min_threshold)
    result = train.train_and_evaluate(student_config(r), str(base / f'round{r}'))
    results.append({'round': r, 'workdir': str(base / f'round{r}'),
                    'pseudo_labels': manifest['examples'],
                    'selected': manifest['selection']['selected'], **result})
  (base / 'rounds.json').write_text(json.dumps(results, indent=1))
  for r in results:
    logging.info('Round %d (%s): top-1 %.2f%% (EMA %.2f%%)%s', r['round'],
                 'teacher' if r['round'] == 0 else 'student', 100 * r['top1'],
                 100 * r.get('ema_top1', r['top1']),
                 f", taught by {r['selected']:,} selected pseudo-labels" if r['round'] else '')
  return results


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'The training config of the teacher and the '
                                  'students (its labeled split).', lock_config=True)
  flags.DEFINE_string('out', None, 'Parent directory of the rounds (local or gs://).')
  pseudo_label.define_source_flags()
  pseudo_label.define_labelling_flags()
  flags.DEFINE_integer('rounds', 1, 'Student rounds after the teacher.')
  flags.DEFINE_float('ratio', 1.0, 'Pseudo-labeled images per labeled image in each step.')
  cli.define_distributed_flag()
  flags.mark_flags_as_required(['config', 'out', 'data'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  cli.start_jax(**cli.distributed_flags())
  results = run_rounds(f.config, f.out, f.data, f.split, f.rounds, f.data_dir, f.ratio,
                       f.per_class, f.min_threshold, f.top_k, f.num_shards)
  for r in results:
    print(json.dumps({k: r[k] for k in ('round', 'workdir', 'top1', 'ema_top1') if k in r}))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
