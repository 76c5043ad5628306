"""One process of a multi-process (multi-host) CPU run, started by tests/test_multihost.py.

  python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR DATA_ROOT

Each process has 2 CPU devices; they talk through jax.distributed (gloo collectives), exactly
as TPU VM hosts do. DATA_ROOT holds photos/ (class folders), fashion_teacher/ and
photo_teacher/ (weights directories). The runs, each printing one `RESULT {json}` line:
  fashion          configs/tiny.py (in-memory Fashion-MNIST)
  folder           the photographs streamed with the RS recipe (test_sources_e2e.rs_config)
  fashion_student  Fashion-MNIST test[:200] pseudo-labeled by fashion_teacher into
                   WORKDIR/pseudo_fashion, then configs/tiny.py with them mixed in
  photo_student    the photographs pseudo-labeled by photo_teacher, then streamed with them
"""
import faulthandler
import json
import logging
import os
import sys

# The test starts it with 2 CPU devices and the tests' fast-compiling flags (conftest.process_env).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import jax  # noqa: E402

# A host that hangs prints every thread's stack and exits, so the test fails showing where,
# instead of waiting out its timeout. The runs take ~70-140 s.
faulthandler.dump_traceback_later(480, exit=True)
logging.getLogger().setLevel(logging.INFO)  # the test reads rs.pseudo_label's per-host shard counts

process_id, num_processes, port, workdir, root = (int(sys.argv[1]), int(sys.argv[2]),
                                                  sys.argv[3], sys.argv[4], sys.argv[5])
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(f'localhost:{port}', num_processes=num_processes,
                           process_id=process_id)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import tiny  # noqa: E402  (not conftest: it imports torchvision, ~4 s)
from rs import pseudo_label, train  # noqa: E402
from test_sources_e2e import rs_config  # noqa: E402


def run(name, config, **extra):
  result = train.train_and_evaluate(config, os.path.join(workdir, name))
  print('RESULT', json.dumps({'run': name, 'process': jax.process_index(), **extra, **result}),
        flush=True)


def with_pseudo_labels(config, name, teacher, data, split, data_dir):
  out = os.path.join(workdir, name)
  pseudo_label.label(os.path.join(root, teacher), data, split, data_dir, out, num_shards=3)
  config.data.pseudo.update({'dir': out, 'ratio': 1.0})
  return config


photos = os.path.join(root, 'photos')
run('fashion', tiny.get_config(), devices=jax.device_count())
run('folder', rs_config(name='folder', data_dir=photos))
run('fashion_student', with_pseudo_labels(tiny.get_config(), 'pseudo_fashion', 'fashion_teacher',
                                          'fashion_mnist', 'test[:200]', None))
run('photo_student', with_pseudo_labels(rs_config(name='folder', data_dir=photos),
                                        'pseudo_photos', 'photo_teacher', 'folder', 'train',
                                        photos))
