"""Do these runs train like the baseline? Loss curves, final accuracy and speed, side by side.

  python -m rs.tools.compare_runs --baseline=/tmp/f32 --runs=/tmp/bf16,/tmp/bf16_x2 \
      [--reference=/tmp/f32_seed1] [--tag=train/loss] [--loss_rtol=0.02] [--top1_atol=0.01]

For a faster setting of the same training (bfloat16, more CPU devices, other XLA flags) this
says whether it is still the same training: each run's logged curve (`--tag`, by default the
training loss averaged over each log interval) against the baseline's at the steps both logged,
as the largest and the mean relative difference, and the last evaluation's top-1 (EMA where
kept) against the baseline's. A run passes when its mean loss difference is within the
tolerance and its top-1 within --top1_atol. The mean, not the largest: two runs that differ only
in rounding drift apart like two seeds, and single log points then differ by 5-15%.

The tolerance is --loss_rtol, or, with --reference (the baseline's own setting run with another
seed), the mean difference of that run: a faster setting then passes when it is no further from
the baseline than chance is. Speed is the runs' own logged images/s (median over the log
points), for a first look; rs.tools.benchmark measures speed side by side.
Exit status 1 when a run fails, so scripts can stop on it.
"""
import dataclasses
import statistics
import sys

from absl import flags

from rs import cli


@dataclasses.dataclass
class Comparison:
  run: str
  steps: int               # steps both runs logged the tag at
  max_rel_diff: float      # largest |run - baseline| / |baseline| over those steps
  mean_rel_diff: float     # what the loss tolerance applies to
  top1: float | None       # the run's last evaluation
  top1_diff: float | None  # run - baseline
  images_per_sec: float | None
  speedup: float | None    # images/s over the baseline's
  passed: bool


@dataclasses.dataclass
class Figures:
  """What a comparison reads of one run, read once."""
  workdir: str
  curve: dict[int, float]        # the compared scalar, by step
  top1: float | None             # the last evaluation's (EMA where kept)
  images_per_sec: float | None   # median over the log points


def read_figures(workdir: str, tag: str = 'train/loss') -> Figures:
  from rs import metrics, rundir
  evals = rundir.read_evals(workdir)
  top1 = evals[-1].get('ema_top1', evals[-1].get('top1')) if evals else None
  rates = list(metrics.read_scalars(workdir, 'train/images_per_sec').values())
  return Figures(workdir, metrics.read_scalars(workdir, tag), top1,
                 statistics.median(rates) if rates else None)


def compare(baseline: str | Figures, run: str, tag: str = 'train/loss', loss_rtol: float = 0.02,
            top1_atol: float = 0.01) -> Comparison:
  """`run` against `baseline` (workdirs, or the baseline's figures already read); see the
  module docstring."""
  base = baseline if isinstance(baseline, Figures) else read_figures(baseline, tag)
  this = read_figures(run, tag)
  steps = sorted(set(base.curve) & set(this.curve))
  if not steps:
    raise ValueError(f'{run} and {base.workdir} have no step in common that logged {tag!r}')
  diffs = [abs(this.curve[s] - base.curve[s]) / max(abs(base.curve[s]), 1e-12) for s in steps]
  mean = statistics.fmean(diffs)
  top1_diff = None if this.top1 is None or base.top1 is None else this.top1 - base.top1
  speedup = (this.images_per_sec / base.images_per_sec
             if this.images_per_sec and base.images_per_sec else None)
  passed = mean <= loss_rtol and (top1_diff is None or abs(top1_diff) <= top1_atol)
  return Comparison(run, len(steps), max(diffs), mean, this.top1, top1_diff,
                    this.images_per_sec, speedup, passed)


def compare_all(baseline: str, runs: list[str], reference: str | None = None,
                tag: str = 'train/loss', loss_rtol: float = 0.02,
                top1_atol: float = 0.01) -> tuple[Figures, float, list[Comparison]]:
  """(the baseline's figures, the loss tolerance used, each run's Comparison); with
  `reference`, the tolerance is that run's mean difference from the baseline, and its own
  comparison comes first."""
  base = read_figures(baseline, tag)
  if reference:
    loss_rtol = compare(base, reference, tag).mean_rel_diff
    runs = [reference, *runs]
  return base, loss_rtol, [compare(base, run, tag, loss_rtol, top1_atol) for run in runs]


def format_table(base: Figures, comparisons: list[Comparison], tag: str, loss_rtol: float,
                 top1_atol: float) -> str:
  def num(value, spec):
    return '-' if value is None else format(value, spec)
  lines = [f'baseline {base.workdir}: top-1 {num(base.top1, ".4f")}, '
           f'{num(base.images_per_sec, ".0f")} images/s; tolerances: mean {tag} difference '
           f'<= {loss_rtol:.2%}, top-1 within {100 * top1_atol:g} points',
           f'| run | steps | {tag} max / mean rel. diff | top-1 | top-1 diff | images/s | '
           f'speed-up | within tolerance |', '|---|---|---|---|---|---|---|---|']
  for c in comparisons:
    lines.append(f'| {c.run} | {c.steps} | {c.max_rel_diff:.2%} / {c.mean_rel_diff:.2%} | '
                 f'{num(c.top1, ".4f")} | {num(c.top1_diff, "+.4f")} | '
                 f'{num(c.images_per_sec, ".0f")} | {num(c.speedup, ".2f")}x | '
                 f'{"yes" if c.passed else "NO"} |')
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_string('baseline', None, 'The reference run\'s workdir (e.g. float32).')
  flags.DEFINE_list('runs', None, 'Workdirs to compare with it.')
  flags.DEFINE_string('tag', 'train/loss', 'The TensorBoard scalar to compare.')
  flags.DEFINE_string('reference', None, 'The baseline\'s setting with another seed: its mean '
                      'difference replaces --loss_rtol.')
  flags.DEFINE_float('loss_rtol', 0.02, 'Largest mean relative difference allowed on the curve.')
  flags.DEFINE_float('top1_atol', 0.01, 'Largest top-1 difference allowed (absolute).')
  flags.mark_flags_as_required(['baseline', 'runs'])


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    base, loss_rtol, comparisons = compare_all(f.baseline, f.runs, f.reference, f.tag,
                                               f.loss_rtol, f.top1_atol)
  except ValueError as e:
    cli.fail(str(e))
  print(format_table(base, comparisons, f.tag, loss_rtol, f.top1_atol))
  if not all(c.passed for c in comparisons):
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
