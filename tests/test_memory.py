"""The pre-flight memory check: XLA's analysis of a compiled program against a device limit."""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs import memory


def test_step_bytes_counts_arguments_outputs_and_donation():
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)  # 4 MiB
  plain = jax.jit(lambda a: a * 2).lower(x).compile()
  donated = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
  assert memory.step_bytes(plain) >= 8 * 2**20  # argument + separate output
  assert memory.step_bytes(donated) < memory.step_bytes(plain)  # the output reuses the input


def test_a_step_that_cannot_fit_is_a_clear_error():
  compiled = jax.jit(lambda a: a @ a).lower(jax.ShapeDtypeStruct((512, 512), jnp.float32)).compile()
  memory.check_fits(compiled, 'The train step', None)  # no limit known: only logged
  memory.check_fits(compiled, 'The train step', 2**30)
  with pytest.raises(MemoryError, match=r'needs 0\.\d\d GiB per device but the device holds '
                                         r'0\.00 GiB: lower --config\.batch_size, use '
                                         r'--config\.dtype=bfloat16, or use more devices$'):
    memory.check_fits(compiled, 'The train step', 1024)  # no model: no remat to name



def staircase(batch: int) -> int:
  """Bytes of a made-up step: 100 that do not grow, 10 per example, 30 more from 20 on."""
  return 100 + 10 * batch + (30 if batch >= 20 else 0)


@pytest.mark.parametrize('limit', [105, 110, 299, 300, 329, 330, 500, 739])
def test_largest_batch_finds_the_largest_that_fits(limit):
  truth = max((b for b in range(1, 64) if staircase(b) <= limit), default=0)
  compiled = []
  found = memory.largest_batch(lambda b: compiled.append(b) or staircase(b), 64, staircase(64),
                               limit, compilations=8)
  assert found == truth
  assert len(compiled) <= 6 + 8  # halvings + refinements
  assert all(b < 64 for b in compiled)


def test_the_error_names_a_batch_size_that_fits():
  """The embedded default's train step on one device at batch 64, against a limit of 60% of
  what it needs: the batch the error names fits when compiled, and the next one does not."""
  from configs import fashion_mnist
  from rs import optim, programs, sharding
  config = fashion_mnist.get_config()
  config.model.remat = 'none'  # the error then names remat as a fix
  mesh = sharding.create_mesh(jax.devices()[:1])
  schedule = optim.learning_rate_schedule(config.optimizer, 64, 1, 10, 10)
  example = {'image': np.zeros((1, 32, 32, 1), np.float32), 'label': np.zeros((1,), np.int32)}
  bytes_at = programs.train_step_bytes(config, mesh, 10, (32, 32, 1), schedule, example)
  compiled = []

  def compiling(batch):
    compiled.append(batch)
    return bytes_at(batch)
  config.batch_size = 64
  training = programs.build_training(config, mesh, 10, (32, 32, 1), schedule)
  step = training.train_fn.lower(
      jax.eval_shape(training.init, jax.random.key(0)),
      {'image': jax.ShapeDtypeStruct((64, 32, 32, 1), jnp.float32),
       'label': jax.ShapeDtypeStruct((64,), jnp.int32)}).compile()
  limit = int(memory.step_bytes(step) * 0.6)
  with pytest.raises(MemoryError) as error:
    memory.check_fits(step, 'The train step', limit, 64, 1, compiling, model=training.model)
  fits = int(re.search(r'set --config\.batch_size=(\d+) or lower \(\1 per device fits, 64 does '
                       r'not\), set --config\.model\.remat=block \(recompute in the backward '
                       r'pass\), use --config\.dtype=bfloat16, or use more devices$',
                       str(error.value)).group(1))
  assert 8 <= fits < 64 and fits in compiled
  assert bytes_at(fits) <= limit < bytes_at(fits + 1)  # measured: 16 fits, 17 does not
  # Where no batch fits (the state alone is too large), the error says so.
  with pytest.raises(MemoryError, match=r'lower --config\.batch_size \(not even 1 example per '
                                        r'device fits\)'):
    memory.check_fits(step, 'The train step', limit, 64, 1, lambda batch: limit + 1)


def test_rs_main_names_the_batch_size_that_fits_and_writes_nothing(tmp_path, monkeypatch):
  """configs/tiny.py on the 8 test devices (4 per device) against a device that holds less than
  its step needs: one line naming the largest batch_size that fits, and no workdir."""
  from conftest import run_command

  def tight_check(compiled, name, limit, batch, devices, bytes_at, **model):
    limit = (memory.step_bytes(compiled) + bytes_at(1)) // 2  # 1 per device fits, 4 does not
    return real_check(compiled, name, limit, batch, devices, bytes_at, **model)
  real_check = memory.check_fits
  monkeypatch.setattr(memory, 'check_fits', tight_check)
  workdir = tmp_path / 'run'
  result = run_command('rs.main', '--config=configs/tiny.py', f'--workdir={workdir}')
  assert result.status == 1
  per_device = int(re.search(r'set --config\.batch_size=(\d+) or lower \((\d+) per device fits, 4 '
                             r'does not\)', result.stderr.splitlines()[-1]).group(2))
  assert 1 <= per_device < 4 and f'--config.batch_size={8 * per_device} ' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and not workdir.exists()
  # The run already recomputes each block (remat 'auto' on a CPU): the remat fix left is the
  # policy that keeps no convolution outputs.
  assert ('set --config.model.remat_policy=nothing (recompute the convolutions too)'
          in result.stderr and 'model.remat=block' not in result.stderr)


def test_a_cpu_device_holds_its_share_of_what_the_host_has_left():
  """On a CPU the pre-flight check compares the step with the memory the host has left (the
  kernel's MemAvailable, or a container's limit less its use) split over the run's CPU
  devices, plus what the step's arguments already hold: memory this process holds is not
  offered again."""
  from rs import sharding
  with open('/proc/meminfo') as f:
    total = int(next(line for line in f if line.startswith('MemTotal:')).split()[1]) * 1024
  host = memory.host_memory_bytes()
  assert 0 < host <= total
  # 2 GiB written (so resident) leave ~2 GiB less. The other test worker's memory moves too,
  # so the drop is looked for in up to three tries.
  drops = []
  for _ in range(3):
    before = memory.available_host_bytes()
    assert 0 < before <= host
    held = np.ones(2 * memory.GIB, np.uint8)
    drops.append((before - memory.available_host_bytes()) / memory.GIB)
    del held
    if 1.0 < drops[-1] < 3.0:
      break
  assert 1.0 < drops[-1] < 3.0, drops
  cpu = jax.devices('cpu')[0]
  share = memory.device_limit(cpu, sharing=8, held=memory.GIB)
  expected = memory.GIB + memory.available_host_bytes() * memory.CPU_STEP_SHARE / 8
  assert abs(share - expected) < 0.2 * memory.GIB
  # rs's CPU devices wait at collectives longer than XLA:CPU's 40 s; XLA_FLAGS set wins.
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('XLA_FLAGS', '--xla_cpu_collective_call_terminate_timeout_seconds=5')
    sharding.patient_cpu_collectives()
    assert os.environ['XLA_FLAGS'].split() == [
        '--xla_cpu_collective_call_terminate_timeout_seconds=5',
        '--xla_cpu_collective_call_warn_stuck_timeout_seconds=120']


def test_a_containers_limit_counts_its_use_but_not_the_cache_it_can_drop(tmp_path, monkeypatch):
  """In a container (memory cgroup) of 8 GiB using 6 GiB, 1 GiB of it file cache the kernel can
  drop: the host gives 8 GiB and has 3 GiB left; without a limit ('max') only the machine
  counts."""
  limit, usage, stat = (tmp_path / name for name in ('memory.max', 'memory.current', 'memory.stat'))
  limit.write_text(f'{8 * memory.GIB}\n')
  usage.write_text(f'{6 * memory.GIB}\n')
  stat.write_text(f'anon {5 * memory.GIB}\ninactive_file {memory.GIB}\nactive_file 0\n')
  monkeypatch.setattr(memory, 'CGROUPS', ((str(limit), str(usage), str(stat), 'inactive_file'),))
  machine = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert memory.host_memory_bytes() == min(machine, 8 * memory.GIB)
  assert memory.available_host_bytes() == 3 * memory.GIB  # the machine has more left
  limit.write_text('max\n')
  assert memory.host_memory_bytes() == machine
  assert memory.available_host_bytes() > 0


def test_an_in_memory_dataset_that_cannot_be_held_at_the_image_size_is_one_line(tmp_path):
  """configs/tiny.py's 3,200 training images at 4,096 px would take 50 GiB: rs.main stops
  before resizing them, naming the fix, and writes nothing."""
  from conftest import run_command
  workdir = tmp_path / 'run'
  result = run_command('rs.main', '--config=configs/tiny.py', f'--workdir={workdir}',
                       '--config.data.image_size=4096')
  assert result.status == 1
  assert re.fullmatch(r'error: data\.image_size=4096: the train\[:3200\] split of fashion_mnist '
                      r'held in memory at that size takes 50\.0 GiB of the host\'s [\d.]+; lower '
                      r'--config\.data\.image_size', result.stderr.strip().splitlines()[-1])
  assert not workdir.exists()
