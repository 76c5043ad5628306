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
  evaluation, rs.export's serving function, rs.predict and rs.tools.benchmark run.

  Images with one axis more than the model takes hold several views of each example (a
  video's clips x crops): each example's probabilities are averaged over its views, returned
  as log-probabilities (a valid logit vector: its softmax is the mean)."""
  if images.ndim == model.input_rank + 1:
    b, views = images.shape[:2]
    out = logits(model, variables, images.reshape(b * views, *images.shape[2:]), mean, std)
    return jax.nn.logsumexp(jax.nn.log_softmax(out.reshape(b, views, -1)), axis=1) - jnp.log(
        views)
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


def pseudo_targets(batch, num_classes: int, targets: str, temperature: float,
                   label_smoothing: float) -> jax.Array:
  """The target distribution of each pseudo-labeled row (float32 [B, num_classes]).

  'soft': the teacher's stored probabilities - its top k ('pseudo_classes', 'pseudo_probs'),
  the rest of the mass ('pseudo_rest') spread evenly over the other classes - sharpened or
  softened to p^(1/temperature), renormalised (Noisy Student's rule). 'hard': its argmax
  ('label'), label-smoothed as the labeled rows are."""
  if targets == 'hard':
    return optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), label_smoothing)
  classes, probs, rest = batch['pseudo_classes'], batch['pseudo_probs'], batch['pseudo_rest']
  others = max(num_classes - classes.shape[-1], 1)
  dense = jnp.broadcast_to((rest / others)[:, None], (classes.shape[0], num_classes))
  dense = dense.at[jnp.arange(classes.shape[0])[:, None], classes].set(probs)
  if temperature != 1.0:
    dense = jnp.power(dense, 1.0 / temperature)
  total = jnp.sum(dense, axis=-1, keepdims=True)
  # Labeled rows carry no teacher's mass: their targets stay 0, finite (and their gradient).
  return dense / jnp.where(total > 0, total, 1.0)


def mixed_loss(logits: jax.Array, batch, config) -> tuple[jax.Array, dict]:
  """Noisy Student's loss on a batch of labeled and pseudo-labeled rows ('pseudo' 1.0):
  the label-smoothed cross entropy averaged over the labeled rows, plus loss_weight times the
  cross entropy against the teacher's targets averaged over the pseudo-labeled rows.
  loss_weight None is the ratio of pseudo-labeled to labeled rows: every image then weighs
  the same, as in Noisy Student (its sum over all images divided by the labeled count)."""
  p = config.data.pseudo
  is_pseudo = batch['pseudo']
  labeled = 1.0 - is_pseudo
  num_classes = logits.shape[-1]
  supervised = cross_entropy(logits, batch['label'], num_classes, config.label_smoothing)
  targets = pseudo_targets(batch, num_classes, p.targets, p.temperature, config.label_smoothing)
  taught = optax.softmax_cross_entropy(logits, targets)
  labeled_loss = jnp.sum(supervised * labeled) / jnp.sum(labeled)
  pseudo_loss = jnp.sum(taught * is_pseudo) / jnp.sum(is_pseudo)
  weight = p.ratio if p.loss_weight is None else p.loss_weight
  return labeled_loss + weight * pseudo_loss, {'labeled_loss': labeled_loss,
                                                'pseudo_loss': pseudo_loss}


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
    if mixed:
      loss, parts = mixed_loss(logits, batch, config)
    else:
      loss = jnp.mean(cross_entropy(logits, labels, logits.shape[-1], config.label_smoothing))
      parts = {}
    return loss, (logits, updates['batch_stats'], parts)

  mixed = 'pseudo' in batch  # pseudo-labeled rows mixed in (rs.data.pseudo)
  (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trainable)
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
  # Accuracy on the labeled rows; on the pseudo-labeled ones, agreement with the teacher.
  accuracy = lambda k, rows: jnp.sum(topk_correct(logits, labels, k) * rows) / jnp.sum(rows)
  metrics = {
      'loss': loss,
      'l2_loss': optim.l2_loss(state.params),
      'learning_rate': schedule(state.step),
      'top1': jnp.mean(topk_correct(logits, labels, 1)),
      'top5': jnp.mean(topk_correct(logits, labels, 5)),
      'grad_norm': grad_norm,
      **parts,
  }
  if mixed:
    metrics.update(top1=accuracy(1, 1.0 - batch['pseudo']), top5=accuracy(5, 1.0 - batch['pseudo']),
                   teacher_agreement=accuracy(1, batch['pseudo']))
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
  'batch_stats'}) over the batch, padding masked out, and the count of real examples. A batch
  with one axis more than the model takes holds several views of each example.

  Sums, not means, so the host adds batches up and every real example counts exactly once.
  """
  labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
  out = logits(model, variables, batch['image'], mean, std)  # views averaged, if any
  return {
      'count': jnp.sum(mask),
      'loss': jnp.sum(cross_entropy(out, labels, out.shape[-1], 0.0) * mask),
      'top1': jnp.sum(topk_correct(out, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(out, labels, 5) * mask),
  }
