"""The pure train and eval steps that jax.jit compiles (one program per step, end to end)."""
import jax
import jax.numpy as jnp
import optax

from rs import optim
from rs.state import TrainState


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 (or float 0..255) images -> (x - mean) / std in float32, per channel.

  Done on the device so the host sends uint8, a quarter of the bytes of float32.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def logits(model, variables, images: jax.Array, mean, std) -> jax.Array:
  """float32 logits of uint8 (or 0..255 float) images in inference mode: the one forward that
  evaluation, rs.export's serving function, rs.predict and rs.tools.benchmark run."""
  x = normalize(images, mean, std)
  return model.apply(variables, x, train=False).astype(jnp.float32)


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
  """TF1 ExponentialMovingAverage(decay, num_updates=step): min(decay, (1+t)/(10+t))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  """Per-example softmax cross entropy in float32 with smoothed one-hot targets."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k largest logits."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _is_none(x) -> bool:
  return x is None


def split_frozen(params, frozen):
  """(trainable, frozen) trees with None where the other holds the leaf; `frozen` is a tree
  of Python bools (rs.optim.frozen_mask)."""
  trainable = jax.tree.map(lambda p, f: None if f else p, params, frozen)
  fixed = jax.tree.map(lambda p, f: p if f else None, params, frozen)
  return trainable, fixed


def join_frozen(trainable, fixed):
  """The inverse of split_frozen."""
  return jax.tree.map(lambda t, f: f if t is None else t, trainable, fixed, is_leaf=_is_none)


def train_step(state: TrainState, batch, *, model, tx, schedule, config):
  """One update: forward/backward on the global batch, SGD, BN statistics, EMA.

  Only the trainable parameters are differentiated: those a zero learning-rate multiplier
  freezes (optimizer.param_groups) enter the loss as constants, so a frozen backbone costs
  its forward pass and no backward (a linear probe's step: a third of full training's).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  images = normalize(batch['image'], config.data.mean, config.data.std)
  labels = batch['label']
  frozen = optim.frozen_mask(state.params, config.optimizer)
  trainable, fixed = split_frozen(state.params, frozen)

  def loss_fn(trainable):
    variables = {'params': join_frozen(trainable, fixed), 'batch_stats': state.batch_stats}
    logits, updates = model.apply(variables, images, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': rng})
    logits = logits.astype(jnp.float32)
    loss = jnp.mean(cross_entropy(logits, labels, logits.shape[-1], config.label_smoothing))
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
  grad_norm = optax.global_norm(grads)  # over what is trained: a frozen leaf has no gradient
  # The optimizer sees the whole tree; its frozen groups (optax.set_to_zero) ignore the zeros.
  grads = join_frozen(grads, jax.tree.map(jnp.zeros_like, fixed))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  decay = ema_decay(config.ema_decay, state.step)
  ema = lambda old, new: decay * old + (1.0 - decay) * new
  updated = state.replace(
      params=params, batch_stats=batch_stats, opt_state=opt_state,
      ema_params=jax.tree.map(ema, state.ema_params, params),
      ema_batch_stats=jax.tree.map(ema, state.ema_batch_stats, batch_stats))
  new_state = skip_if_nonfinite(state, updated, jnp.isfinite(loss) & jnp.isfinite(grad_norm))
  metrics = {
      'loss': loss,
      'l2_loss': optim.l2_loss(state.params),
      'learning_rate': schedule(state.step),
      'top1': jnp.mean(topk_correct(logits, labels, 1)),
      'top5': jnp.mean(topk_correct(logits, labels, 5)),
      'grad_norm': grad_norm,
  }
  return new_state, metrics


def skip_if_nonfinite(state: TrainState, updated: TrainState, finite: jax.Array) -> TrainState:
  """`updated` one step on, or - if the step's loss or gradient was not finite - `state` with
  only the step and the non-finite counters advanced.

  The update is dropped on the device in every mode, so no NaN ever reaches the weights or a
  checkpoint; whether training then stops or goes on is the host's choice
  (config.on_nonfinite). A select per element, fused into the update: no extra pass.
  """
  step = state.step + 1
  kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  first = jnp.where(~finite & (state.nonfinite_steps == 0), step, state.first_nonfinite_step)
  count = state.nonfinite_steps + (~finite).astype(jnp.int32)
  return kept.replace(step=step, nonfinite_steps=count, first_nonfinite_step=first)


def eval_step(variables, batch, *, model, mean, std):
  """Sums of correct top-1/top-5 and of the loss of one set of weights ({'params',
  'batch_stats'}) over the batch, padding masked out, and the count of real examples.

  Sums, not means, so the host adds batches up and every real example counts exactly once.
  """
  labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
  out = logits(model, variables, batch['image'], mean, std)
  return {
      'count': jnp.sum(mask),
      'loss': jnp.sum(cross_entropy(out, labels, out.shape[-1], 0.0) * mask),
      'top1': jnp.sum(topk_correct(out, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(out, labels, 5) * mask),
  }
