"""What a preemption costs a multi-host run, measured with launch/local.py on this machine.

  .venv/bin/python scripts/preemption_cost.py [--processes=2] [--steps=60] [--every=10]

Three launches of configs/tiny.py on N processes (hosts), checkpointing every `--every` steps:
1. uninterrupted: the time from launch to the first training step (start-up: imports, joining
   the hosts, compiling), and the steps per second after it;
2. a host killed (kill -9) half-way between two checkpoints: how long the other hosts take to
   stop (--peer_timeout=10), how long the relaunch takes to train again, the steps recomputed;
3. a preemption notice (SIGTERM to every host): how long the hosts take to save and stop, the
   relaunch's start-up, the steps recomputed (none: they save the step they stop at).
Prints a markdown table (docs/launch.md has one). Not a test: it takes a few minutes.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'launch'))
import local  # noqa: E402  (launch/local.py: the hosts' pids)
TRAIN = re.compile(r'\[train +(\d+)/')
RESUMED = re.compile(r'Resumed from the checkpoint at step (\d+)')


class Launch:

  def __init__(self, args, workdir: str, logs: str):
    self.log_path = os.path.join(logs, 'process-0.log')
    self.started = time.monotonic()
    self.proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'launch', 'local.py'),
         f'--processes={args.processes}', '--devices=1', f'--logs={logs}', '--quiet', '--grace=60',
         '--', sys.executable, '-m', 'rs.main', '--config=configs/tiny.py', f'--workdir={workdir}',
         '--peer_timeout=10', f'--config.train_steps={args.steps}',
         f'--config.checkpoint_every_steps={args.every}', '--config.log_every_steps=1',
         f'--config.eval_every_steps={args.steps}'], cwd=ROOT, stderr=subprocess.DEVNULL)

  def log(self) -> str:
    try:
      with open(self.log_path) as f:
        return f.read()
    except OSError:
      return ''

  def steps(self) -> list[int]:
    return [int(s) for s in TRAIN.findall(self.log())]

  def wait_for(self, condition, what: str, timeout: float = 600) -> float:
    """Seconds since launch when condition() first held."""
    deadline = time.monotonic() + timeout
    while not condition():
      if self.proc.poll() is not None and not condition():
        sys.exit(f'the launch ended before {what}: see {self.log_path}')
      if time.monotonic() > deadline:
        sys.exit(f'no {what} after {timeout} s: see {self.log_path}')
      time.sleep(0.05)
    return time.monotonic() - self.started

  def first_step(self) -> float:
    return self.wait_for(lambda: bool(self.steps()), 'training step')

  def exit_seconds(self, since: float) -> float:
    self.proc.wait(timeout=600)
    return time.monotonic() - since


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--every', type=int, default=10)
  args = parser.parse_args()
  out = tempfile.mkdtemp(prefix='rs_preemption_cost.')
  rows = []

  clean = Launch(args, f'{out}/clean', f'{out}/logs_clean')
  startup = clean.first_step()
  clean.wait_for(lambda: clean.proc.poll() is not None, 'the end')
  times = [float(t) for t in re.findall(r'([\d.]+) steps/s', clean.log())]
  rate = sorted(times)[len(times) // 2] if times else float('nan')
  rows.append(('uninterrupted', '-', f'{startup:.1f}', '-', '0'))

  kill_at = 2 * args.every + args.every // 2
  run = Launch(args, f'{out}/killed', f'{out}/logs_killed1')
  run.wait_for(lambda: max(run.steps() or [0]) >= kill_at, f'step {kill_at}')
  last = max(run.steps())
  os.kill(local.process_pids(run.proc.pid)[1], signal.SIGKILL)
  stopped = run.exit_seconds(time.monotonic())
  again = Launch(args, f'{out}/killed', f'{out}/logs_killed2')
  restart = again.first_step()
  resumed = int(RESUMED.search(again.log()).group(1))
  rows.append(('kill -9 of host 1', f'{stopped:.1f}', f'{restart:.1f}', str(resumed),
               str(last - resumed)))
  again.proc.wait()

  run = Launch(args, f'{out}/stopped', f'{out}/logs_stopped1')
  run.wait_for(lambda: max(run.steps() or [0]) >= kill_at, f'step {kill_at}')
  run.proc.send_signal(signal.SIGTERM)
  stopped = run.exit_seconds(time.monotonic())
  last = max(run.steps())
  again = Launch(args, f'{out}/stopped', f'{out}/logs_stopped2')
  restart = again.first_step()
  resumed = int(RESUMED.search(again.log()).group(1))
  rows.append(('SIGTERM (preemption notice)', f'{stopped:.1f}', f'{restart:.1f}', str(resumed),
               str(max(0, last - resumed))))
  again.proc.wait()

  print(f'{args.processes} processes of configs/tiny.py, checkpoint every {args.every} steps, '
        f'{rate:.1f} steps/s after start-up (median logged rate); runs in {out}\n')
  print('| event | seconds until every host stopped | seconds from relaunch to the first step '
        '| resumed at step | steps recomputed |')
  print('|---|---|---|---|---|')
  for row in rows:
    print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
  main()
