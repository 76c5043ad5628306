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


def train_step(state: TrainState, batch, *, model, tx, schedule, config):
  """One update: forward/backward on the global batch, SGD, BN statistics, EMA."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  images = normalize(batch['image'], config.data.mean, config.data.std)
  labels = batch['label']

  def loss_fn(params):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': rng})
    logits = logits.astype(jnp.float32)
    loss = jnp.mean(cross_entropy(logits, labels, logits.shape[-1], config.label_smoothing))
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
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


def eval_step(state: TrainState, batch, *, model, config):
  """Sums of correct top-1/top-5 and loss for the raw and the EMA weights, padding masked out.

  Sums, not means, so the host adds batches up and every real example counts exactly once.
  """
  images = normalize(batch['image'], config.data.mean, config.data.std)
  labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
  sums = {'count': jnp.sum(mask)}
  for prefix, params, stats in (('', state.params, state.batch_stats),
                                ('ema_', state.ema_params, state.ema_batch_stats)):
    logits = model.apply({'params': params, 'batch_stats': stats}, images, train=False)
    logits = logits.astype(jnp.float32)
    loss = cross_entropy(logits, labels, logits.shape[-1], 0.0)
    sums[f'{prefix}loss'] = jnp.sum(loss * mask)
    sums[f'{prefix}top1'] = jnp.sum(topk_correct(logits, labels, 1) * mask)
    sums[f'{prefix}top5'] = jnp.sum(topk_correct(logits, labels, 5) * mask)
  return sums
