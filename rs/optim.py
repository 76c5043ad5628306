"""The optimizer: SGD with momentum (ResNet-RS) or TF1 RMSProp (EfficientNet), a linear warmup
then cosine, TF1 step or TF exponential decay, and L2 decay as the official codes add it."""
import math

import jax
import jax.numpy as jnp
import optax

from rs import transfer


def peak_learning_rate(base_learning_rate: float, batch_size: int) -> float:
  """The linear scaling rule of the official code: base x batch / 256 (0.1 x 4096/256 = 1.6)."""
  return base_learning_rate * batch_size / 256


def learning_rate_schedule(opt_config, batch_size: int, warmup_steps: int, total_steps: int,
                           steps_per_epoch: float) -> optax.Schedule:
  """Linear warmup from 0, then 'cosine' decay to 0 (paper, TF2), 'step' (released TF1) or
  'exponential' (EfficientNet).

  'step' is TF1's 90-epoch schedule stretched to the run: x0.1 at 1/3, 2/3 and 8/9 of the
  run (epochs ~116/233/311 of 350); its warmup is whatever the config asks for.
  'exponential' is the official EfficientNet one: x`decay_rate` every `decay_epochs` epochs
  (staircase), counted from step 0, so the warmup ends on the decayed value (x0.97^2 at 5
  epochs of 2.4).
  """
  peak = peak_learning_rate(opt_config.base_learning_rate, batch_size)
  warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
  decay_steps = max(total_steps - warmup_steps, 1)
  if opt_config.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps)
  elif opt_config.schedule == 'step':
    boundaries = [round(f * total_steps) - warmup_steps for f in (30 / 90, 60 / 90, 80 / 90)]
    decay = optax.piecewise_constant_schedule(
        peak, {b: 0.1 for b in boundaries if b > 0})
  elif opt_config.schedule == 'exponential':
    every = max(int(opt_config.decay_epochs * steps_per_epoch), 1)  # TF: int(2.4 x steps/epoch)
    decay = lambda step: peak * opt_config.decay_rate ** ((step + warmup_steps) // every)
  else:
    raise ValueError(f"optimizer.schedule={opt_config.schedule!r}: use 'cosine', 'step' or "
                     "'exponential'")
  return optax.join_schedules([warmup, decay], [warmup_steps])


def is_batch_norm(path) -> bool:
  """BatchNorm parameters live in modules named 'bn' (see rs.models.layers.ConvBN)."""
  return any(getattr(k, 'key', None) == 'bn' for k in path)


def weight_decay_mask(params):
  """True for every parameter the official L2 covers: all but BatchNorm's gamma and beta.

  TF1 sums tf.nn.l2_loss over variables whose name lacks 'batch_normalization', so conv
  kernels, SE kernels and biases, and the classifier's kernel and bias are all decayed.
  """
  return jax.tree_util.tree_map_with_path(lambda p, _: not is_batch_norm(p), params)


def l2_loss(params) -> jax.Array:
  """0.5 x sum of squares over the decayed parameters (tf.nn.l2_loss semantics)."""
  leaves = jax.tree.leaves(jax.tree.map(
      lambda x, m: 0.5 * jnp.sum(jnp.square(x)) if m else jnp.zeros(()), params,
      weight_decay_mask(params)))
  return sum(leaves)


OPTIMIZERS = ('momentum', 'rmsprop_tf')


def create_optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """L2 decay, then momentum SGD ('momentum', ResNet-RS) or TF1's RMSProp ('rmsprop_tf',
  EfficientNet): wd x param joins the gradient before the optimizer's buffers, which is what
  adding wd x l2_loss to the TF1 loss does.

  TF1 RMSProp: ms starts at 1, ms <- decay ms + (1 - decay) g^2, mom <- momentum mom +
  lr g / sqrt(ms + eps), w <- w - mom (epsilon inside the root, the learning rate inside the
  momentum buffer); optax's rmsprop with initial_scale=1 and eps_in_sqrt computes exactly that.

  `opt_config.param_groups` ('REGEX:MULTIPLIER', ...; rs.transfer) scales the learning rate
  of the parameters whose names match (first match wins): fine-tuning trains a new head faster
  than the backbone, and a multiplier of 0 freezes parameters (no update, no decay, and no
  momentum buffer).
  """
  def sgd(multiplier: float) -> optax.GradientTransformation:
    if multiplier == 0:
      return optax.set_to_zero()
    scaled = schedule if multiplier == 1 else (lambda step: multiplier * schedule(step))
    name = opt_config.get('name', 'momentum')
    if name == 'momentum':
      update = optax.sgd(scaled, momentum=opt_config.momentum, nesterov=opt_config.nesterov)
    elif name == 'rmsprop_tf':
      update = optax.rmsprop(scaled, decay=opt_config.rmsprop_decay,
                             eps=opt_config.rmsprop_epsilon, initial_scale=1.0,
                             eps_in_sqrt=True, momentum=opt_config.momentum,
                             nesterov=opt_config.nesterov)
    else:
      raise ValueError(f'optimizer.name={name!r}: use one of {OPTIMIZERS}')
    return optax.chain(
        optax.add_decayed_weights(opt_config.weight_decay, mask=weight_decay_mask), update)

  groups = transfer.parse_param_groups(opt_config.get('param_groups'))
  if not groups:
    return sgd(1.0)
  multipliers = {repr(m) for _, m in groups} | {repr(1.0)}
  return optax.multi_transform({label: sgd(float(label)) for label in multipliers},
                               lambda params: transfer.group_labels(params, groups))


def frozen_mask(params, opt_config):
  """A tree of Python bools: True for the parameters a multiplier of 0 freezes
  (optimizer.param_groups). Decided when the step is traced: the step differentiates only the
  others (rs.step.train_step)."""
  groups = transfer.parse_param_groups(opt_config.get('param_groups'))
  labels = transfer.group_labels(params, groups)
  return jax.tree.map(lambda label: float(label) == 0, labels)


def steps_for(config, name: str, steps_per_epoch: float) -> int:
  """A duration given as `{name}_steps` or `{name}_epochs` in the config, in steps."""
  steps = config.get(f'{name}_steps')
  if steps is not None:
    return int(steps)
  return math.ceil(config.get(f'{name}_epochs') * steps_per_epoch)
