"""One process of a multi-process (multi-host) CPU run, started by tests/test_multihost.py.

  python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR [PHOTO_ROOT]

Each process has 2 CPU devices; they talk through jax.distributed (gloo collectives), exactly
as TPU VM hosts do. Prints one `RESULT {json}` line per run.
"""
import faulthandler
import json
import os
import sys

# The test starts it with 2 CPU devices and the tests' fast-compiling flags (conftest.process_env).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import jax  # noqa: E402

# A host that hangs (seen once in a loaded full test run, after the step-3 checkpoint; not
# reproduced alone) prints every thread's stack and exits, so the test fails showing where,
# instead of waiting out its timeout. A run takes ~100-140 s.
faulthandler.dump_traceback_later(480, exit=True)

process_id, num_processes, port, workdir = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                            sys.argv[4])
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(f'localhost:{port}', num_processes=num_processes,
                           process_id=process_id)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import tiny  # noqa: E402  (not conftest: it imports torchvision, ~4 s)
from rs import train  # noqa: E402

result = train.train_and_evaluate(tiny.get_config(), os.path.join(workdir, 'fashion'))
print('RESULT', json.dumps({'run': 'fashion', 'process': jax.process_index(),
                            'devices': jax.device_count(), **result}), flush=True)
if len(sys.argv) > 5:
  from test_sources_e2e import rs_config
  config = rs_config(name='folder', data_dir=sys.argv[5])
  result = train.train_and_evaluate(config, os.path.join(workdir, 'folder'))
  print('RESULT', json.dumps({'run': 'folder', 'process': jax.process_index(), **result}),
        flush=True)
