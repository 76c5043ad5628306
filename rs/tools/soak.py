"""Kill training with SIGKILL again and again, resume it, and check nothing was lost.

  python -m rs.tools.soak --minutes=30 --out=/tmp/rs_soak      # scripts/soak.sh

Each cycle starts `python -m rs.main` on configs/tiny.py (made longer) in one workdir and kills it
with SIGKILL at a random moment: while compiling, between steps, during an evaluation, or while
an asynchronous checkpoint is being written (the log says a save started and its temporary
directory is still there). At the end the run is completed and its final state is compared bit
for bit with an uninterrupted run of the same command. It prints cycles, kills mid-save,
resumes, steps recomputed, and whether the final states are equal.

tests/test_preemption.py uses the same functions with fixed kill points.
"""
import dataclasses
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl import flags

from rs import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Longer than configs/tiny.py's 6 steps, so there are many moments to kill at: saves every 4
# steps (3 kept, so old ones are deleted too), an evaluation every 12.
SOAK_OVERRIDES = ('--config.train_steps=48', '--config.checkpoint_every_steps=4',
                  '--config.keep_checkpoints=3', '--config.eval_every_steps=12',
                  '--config.log_every_steps=1', "--config.data.eval_split=test[:128]")
TRAIN_LINE = re.compile(r'\[train +(\d+)/\d+\]')  # rs.metrics.progress_line
RESUMED_LINE = re.compile(r'Resumed from the checkpoint at step (\d+)')


def environment(devices: int = 2, cache_dir: str | None = None) -> dict[str, str]:
  """The subprocesses' environment: `devices` CPU devices (this process's other XLA flags are
  kept), a shared compilation cache (every restart compiles the same programs), unbuffered
  output so lines arrive as they happen."""
  xla_flags = re.sub(r'--xla_force_host_platform_device_count=\S*', '',
                     os.environ.get('XLA_FLAGS', ''))
  env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'{xla_flags} --xla_force_host_platform_device_count={devices}'.strip(),
             JAX_PLATFORMS='cpu')
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


def command(workdir: str, overrides=SOAK_OVERRIDES) -> list[str]:
  return [sys.executable, '-m', 'rs.main', '--config=configs/tiny.py', f'--workdir={workdir}',
          *overrides]


@dataclasses.dataclass
class Attempt:
  """What one start of the trainer did before it ended or was killed."""
  returncode: int | None = None
  killed: bool = False
  mid_save: bool = False  # a checkpoint's temporary directory existed when it was killed
  resumed_from: int | None = None  # the step it restored (None: started afresh)
  last_step: int = 0  # the last train step it logged
  signal_time: float | None = None  # when `signal_when` sent its signal (time.monotonic)
  seconds_after_signal: float | None = None  # from that signal to the process's exit
  lines: list = dataclasses.field(default_factory=list)


def saving_in_progress(workdir: str, since: float = 0.0) -> bool:
  """True while orbax writes a checkpoint: a temporary directory exists, created (or last
  written) after `since` (time.time()), so that one left by an earlier kill does not count."""
  return any(os.path.getmtime(d) >= since for d in
             glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*')))


def run_once(workdir: str, env: dict, overrides=SOAK_OVERRIDES, kill_when=None,
             signal_when=None, timeout: float = 600) -> Attempt:
  """Starts the trainer; with `kill_when(line, attempt) -> bool`, SIGKILLs it at the first log
  line for which that is true (checked as each line arrives). `signal_when=(signum, when)`
  instead sends `signum` once and lets the trainer end by itself. Returns what happened."""
  attempt = Attempt()
  started = time.time()
  process = subprocess.Popen(command(workdir, overrides), cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + timeout
  for line in process.stdout:
    attempt.lines.append(line)
    if match := TRAIN_LINE.search(line):
      attempt.last_step = int(match.group(1))
    if match := RESUMED_LINE.search(line):
      attempt.resumed_from = int(match.group(1))
    if signal_when and attempt.signal_time is None and signal_when[1](line, attempt):
      process.send_signal(signal_when[0])
      attempt.signal_time = time.monotonic()
    if kill_when is not None and kill_when(line, attempt):
      attempt.mid_save = saving_in_progress(workdir, since=started)
      process.send_signal(signal.SIGKILL)
      attempt.killed = True
      break
    if time.monotonic() > deadline:
      process.kill()
      raise TimeoutError(f'{command(workdir, overrides)} ran past {timeout} s')
  process.stdout.close()
  attempt.returncode = process.wait()
  attempt.seconds_after_signal = (time.monotonic() - attempt.signal_time
                                  if attempt.signal_time is not None else None)
  if not attempt.killed and attempt.returncode != 0:
    raise RuntimeError(f'the trainer failed (exit {attempt.returncode}):\n' +
                       ''.join(attempt.lines[-30:]))
  return attempt


def final_fingerprint(workdir: str) -> dict:
  """The saved fingerprint of the run's latest checkpoint (rs.checkpoint.fingerprint): one
  checksum of the raw bits per array, so equal fingerprints mean bit-identical states."""
  steps = [int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()]
  path = os.path.join(workdir, 'checkpoints', str(max(steps)), 'fingerprint', 'metadata')
  with open(path) as f:
    return json.load(f)


# Kill points: each a predicate on the log line just printed.
def at_startup(line, attempt):
  return 'steps in all' in line  # the run is set up and starts compiling


def at_step(step: int):
  return lambda line, attempt: attempt.last_step >= step and TRAIN_LINE.search(line)


def mid_save(after_step: int = 0):
  """Right after a save past `after_step` starts, while orbax still writes it in the background
  (`Attempt.mid_save` records whether its temporary directory was indeed still there)."""
  def when(line, attempt):
    del attempt
    match = re.search(r'Saving checkpoint at step (\d+)', line)
    return bool(match) and int(match.group(1)) > after_step
  return when


def random_kill(rng: random.Random, reached: int, total_steps: int):
  """One of the kill points, chosen at random past step `reached` (the furthest the run has
  got), so that every cycle makes progress and runs finish, to be checked and started over."""
  if reached >= total_steps:  # every step was run (killed during the final save): finish
    return 'none', lambda line, attempt: False
  kind = rng.choice(['startup', 'step', 'save', 'eval'])
  evals = [s for s in range(12, total_steps + 1, 12) if s > reached]
  if kind == 'startup':
    return kind, at_startup
  if kind == 'save':
    return kind, mid_save(after_step=reached)
  if kind == 'eval' and evals:  # the evaluation starts right after that step's log line
    return kind, at_step(rng.choice(evals))
  return 'step', at_step(rng.randint(reached + 1, total_steps))


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_float('minutes', 30, 'How long to keep killing and resuming.')
  flags.DEFINE_string('out', None, 'Folder for the two workdirs (default: a new temporary one).')
  flags.DEFINE_integer('seed', 0, 'Seed of the random kill points.')
  flags.DEFINE_integer('devices', 2, 'CPU devices of each run.')


def main(argv):
  del argv
  out = FLAGS.out or tempfile.mkdtemp(prefix='rs_soak_')
  env = environment(FLAGS.devices, os.path.join(out, 'jax_cache'))
  reference, soaked = os.path.join(out, 'uninterrupted'), os.path.join(out, 'killed')
  total_steps = int(SOAK_OVERRIDES[0].split('=')[1])
  rng = random.Random(FLAGS.seed)
  started = time.monotonic()
  run_once(reference, env)
  counts = dict(cycles=0, kills_mid_save=0, resumes=0, steps_recomputed=0, finished_runs=0)
  kinds = {}
  furthest = 0  # the highest step any attempt on `soaked` has reached so far
  while time.monotonic() - started < FLAGS.minutes * 60:
    kind, when = random_kill(rng, furthest, total_steps)
    attempt = run_once(soaked, env, kill_when=when)
    counts['cycles'] += 1
    kinds[kind] = kinds.get(kind, 0) + 1
    counts['kills_mid_save'] += attempt.mid_save
    if attempt.resumed_from is not None:
      counts['resumes'] += 1
      counts['steps_recomputed'] += max(0, furthest - attempt.resumed_from)
    furthest = max(furthest, attempt.last_step)
    if not attempt.killed:  # it finished before the kill point: check it, start over
      counts['finished_runs'] += 1
      if final_fingerprint(soaked) != final_fingerprint(reference):
        print(json.dumps({'equal': False, **counts}))
        raise SystemExit(f'{soaked} ended in a different state from {reference}')
      subprocess.run(['rm', '-rf', soaked], check=True)
      furthest = 0
    print(f'cycle {counts["cycles"]}: {kind} kill; {attempt}'.split('lines=')[0], flush=True)
  run_once(soaked, env)  # finish the last one
  counts['finished_runs'] += 1
  equal = final_fingerprint(soaked) == final_fingerprint(reference)
  print(json.dumps({'equal': equal, 'minutes': round((time.monotonic() - started) / 60, 1),
                    **counts, 'kill_points': kinds}))
  if not equal:
    raise SystemExit(1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
