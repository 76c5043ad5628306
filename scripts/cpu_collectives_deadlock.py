"""XLA:CPU deadlocks when independent programs with collectives over several CPU devices are in
flight at once, which is why rs runs them one at a time there (rs.sharding.one_program_at_a_time).

An evaluation as rs.train.evaluate runs it: 40 batches split over 8 CPU devices, each scored
by 2 sets of weights, each program ending in an all-reduce over the batch. With two busy loops
on the cores (as the test suite's other worker makes them), dispatching every program without
waiting for the last ('--evaluate=concurrent', what rs did before 2026-12-04) aborts the
process within seconds at XLA's collective timeout ('Expected 8 threads to join the
rendezvous, but only 7 of them arrived on time'); rs.train.evaluate ('--evaluate=rs') finishes.

  python scripts/cpu_collectives_deadlock.py --evaluate=concurrent   # aborts (status 134)
  python scripts/cpu_collectives_deadlock.py --evaluate=rs           # finishes (tests run it)
"""
import argparse
import os
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--evaluate', choices=('rs', 'concurrent'), default='rs')
parser.add_argument('--rounds', type=int, default=20, help='evaluations of 40 batches each')
parser.add_argument('--timeout', type=int, default=30, help="XLA's collective timeout, seconds")
args = parser.parse_args()
os.environ['XLA_FLAGS'] = ('--xla_force_host_platform_device_count=8 '
                           f'--xla_cpu_collective_call_terminate_timeout_seconds={args.timeout}')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rs import sharding, train  # noqa: E402

mesh = sharding.create_mesh()
weights = {prefix: jax.device_put(jnp.full((256, 256), value), sharding.replicated(mesh))
           for prefix, value in (('', 1.0), ('ema_', 0.5))}


@jax.jit
def eval_fn(w, batch):  # a small network's forward, then sums over the batch: an all-reduce
  x = batch['image']
  for _ in range(5):
    x = jnp.tanh(x @ w)
  return {'mean': x.sum() / x.shape[1], 'count': jnp.float32(x.shape[0])}


class Batches:
  """What rs.train.evaluate reads of a pipeline."""
  eval_skipped = 0

  def eval_iter(self):
    rng = np.random.default_rng(0)
    for _ in range(40):
      yield {'image': rng.random((64, 256), np.float32)}


def concurrent(eval_fn, weights, pipeline, mesh):
  totals = {}
  for batch in pipeline.eval_iter():
    batch = sharding.to_global(batch, mesh)
    for prefix, variables in weights.items():
      sums = eval_fn(variables, batch)
      totals[prefix] = jax.tree.map(jnp.add, totals[prefix], sums) if prefix in totals else sums
  return jax.device_get(totals)


evaluate = train.evaluate if args.evaluate == 'rs' else concurrent
# Two busy loops, which stop when this process ends (an abort skips `finally`).
busy = [subprocess.Popen([sys.executable, '-c',
                          f'import os\nwhile os.getppid() == {os.getpid()}: pass'])
        for _ in range(2)]
try:
  start = time.monotonic()
  for evaluation in range(args.rounds):
    evaluate(eval_fn, weights, Batches(), mesh)
    print(f'evaluation {evaluation + 1}/{args.rounds} done at {time.monotonic() - start:.1f} s',
          flush=True)
finally:
  for process in busy:
    process.kill()
