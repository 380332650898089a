"""The pure train and eval steps: ``(state, batch, rng) -> (state, metrics)``.

One MBCD step (method.md §5), with the work shared wherever the math allows:
  0. frozen trunks, once for every pass below (student twice, teacher once);
  1. uni-modal pass at theta: features h_k, logits z_k, CE_k — and, from one VJP of the same
     forward pass, every modality's inner gradient grad_k CE_k;
  2. theta'_k = theta_k - alpha grad_k CE_k                                (consistency.py)
  3. fused pass at theta' with the AMD mask drawn from z_k's confidences   (amd.py)
  4. teacher's fused prediction on unmasked features, no gradient          (distill.py)
  5. L = CE_mm + sum_k CE_k + lambda L_dis; Adam step on theta, phi
  6. EMA update of the teacher                                             (ema.py)
"""
import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from mbcd_jax import amd, consistency, distill, ema, losses
from mbcd_jax.methods import MethodSpec
from mbcd_jax.models import MultiModalModel

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: trainable student parameters (see ``models.py``).
    frozen: frozen trunk variables (never updated, shared by student and teacher).
    opt_state: optax state for ``params``.
    teacher: EMA of ``params``, or ``None`` for methods without a teacher.
  """
  step: jax.Array
  params: PyTree
  frozen: PyTree
  opt_state: PyTree
  teacher: PyTree | None


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Adam with L2 weight decay added to the gradient, as ``torch.optim.Adam(weight_decay=…)``
  (coupled, not AdamW), constant learning rate (the port has no schedule)."""
  return optax.chain(
      optax.add_decayed_weights(optim_config.weight_decay),
      optax.adam(optim_config.lr, b1=optim_config.b1, b2=optim_config.b2,
                 eps=optim_config.eps))


def init_state(model: MultiModalModel, spec: MethodSpec, tx: optax.GradientTransformation,
               rng: jax.Array, example_batch: Mapping[str, jax.Array]) -> TrainState:
  """Initialises the student, the optimizer and (if the method has one) the teacher."""
  params, frozen = model.init(rng, example_batch)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                    opt_state=tx.init(params), teacher=ema.init(params) if spec.ema else None)


def loss_fn(params: PyTree, frozen: PyTree, feats: Mapping[str, jax.Array],
            labels: jax.Array, p_teacher: jax.Array | None, rng: jax.Array, *,
            model: MultiModalModel, spec: MethodSpec) -> tuple[jax.Array, dict]:
  """Eq. 9's objective for one batch. Returns (loss, scalar metrics).

  Args:
    params: trainable student parameters (differentiated).
    frozen: frozen variables.
    feats: modality -> trunk output ``[B, ...]`` (constant: the trunk is frozen).
    labels: ``[B]`` int32.
    p_teacher: ``[B, C]`` teacher probabilities for distillation, or None.
    rng: dropout / AMD randomness for this step.
  """
  r_uni, r_fused, r_amd = jax.random.split(rng, 3)
  norms = params['norms']

  def encode(enc_params):
    return model.encode_all(enc_params, norms, frozen, feats)

  def uni_loss(h):
    # Probe heads (erm / ema) read stop-gradient features so they cannot shape the encoders.
    h = h if spec.train_unimodal else jax.lax.stop_gradient(h)
    z = model.uni_logits(params['uni_heads'], h, train=True, rng=r_uni)
    ces = {m: losses.cross_entropy(z[m], labels) for m in model.modalities}
    return sum(ces.values()), (z, ces)

  # 1. Uni-modal pass at theta. The inner gradients come from the VJP of this same forward pass.
  if consistency.needs_unimodal_grads(spec.consistency):
    h, encode_vjp = jax.vjp(encode, params['encoders'])
    (ce_uni, (z_uni, ces)), dce_dh = jax.value_and_grad(uni_loss, has_aux=True)(h)
    g_uni = consistency.modality_grads(encode_vjp, dce_dh)
  else:
    h = encode(params['encoders'])
    ce_uni, (z_uni, ces) = uni_loss(h)

  # AMD from the pre-update uni-modal confidences (the port computes them before the inner step).
  batch_size = labels.shape[0]
  p_drop = amd.drop_probs(z_uni, spec.amd, base=spec.amd_base, fixed_p=spec.amd_fixed_p)
  keep = amd.sample_keep(r_amd, p_drop, batch_size) if spec.amd != 'off' else None

  def fused_ce(h_):
    z = model.fused_logits(params['fused_head'], h_, keep, train=True, rng=r_fused)
    return losses.cross_entropy(z, labels), z

  # 2-3. Fused pass: at theta' after the inner step, else at theta (features reused).
  metrics = {}
  if spec.consistency in ('inner_first_order', 'inner_second_order'):
    enc_prime = consistency.inner_update(
        params['encoders'], g_uni, spec.alpha,
        second_order=spec.consistency == 'inner_second_order')
    ce_mm, z_mm = fused_ce(encode(enc_prime))
    loss = ce_mm + ce_uni
  elif spec.consistency == 'grad_dot':
    (ce_mm, z_mm), dmm_dh = jax.value_and_grad(fused_ce, has_aux=True)(h)
    g_mm = consistency.modality_grads(encode_vjp, dmm_dh)
    penalty = consistency.grad_dot_penalty(g_uni, g_mm, spec.alpha)
    metrics['grad_dot_penalty'] = penalty
    loss = ce_mm + ce_uni + penalty
  else:
    ce_mm, z_mm = fused_ce(h)
    loss = ce_mm + ce_uni

  # 4-5. Distillation from the teacher's fused prediction into the fused and uni-modal branches.
  if spec.distill:
    l_dis, kl_terms = distill.distillation_loss(
        p_teacher, z_mm, z_uni, lambda_mm=spec.lambda_mm, lambda_um=spec.lambda_um,
        temperature=spec.temperature)
    loss = loss + l_dis
    metrics.update(kl_terms)

  metrics.update({'loss': loss, 'ce_fused': ce_mm,
                  'train_acc_fused': losses.correct(z_mm, labels).mean()})
  for m in model.modalities:
    metrics[f'ce_uni/{m}'] = ces[m]
    metrics[f'p_drop/{m}'] = p_drop[m]
  return loss, metrics


def train_step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array, *,
               model: MultiModalModel, spec: MethodSpec,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One optimizer step of ``spec``'s method.

  Args:
    state: the current TrainState.
    batch: modality -> ``[B, ...]`` float32 inputs, 'label' ``[B]`` int32.
    rng: the run's base key; the step folds in ``state.step`` so that a resumed run draws the
      same randomness as an uninterrupted one.
  Returns:
    (new state, flat dict of scalar metrics).
  """
  rng = jax.random.fold_in(rng, state.step)
  # 0. Frozen trunks once per step: identical for the student's passes and the teacher.
  feats = model.trunk_features(state.frozen, batch)

  # 4. Teacher's fused prediction on unmasked features (no dropout, no AMD, no gradient).
  p_teacher = None
  if spec.distill:
    t = state.teacher
    t_h = model.encode_all(t['encoders'], t['norms'], state.frozen, feats)
    p_teacher = distill.teacher_probs(model.fused_logits(t['fused_head'], t_h, train=False),
                                      spec.temperature)

  grad_fn = jax.grad(functools.partial(loss_fn, model=model, spec=spec), has_aux=True)
  grads, metrics = grad_fn(state.params, state.frozen, feats, batch['label'], p_teacher, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  teacher = ema.update(state.teacher, params, spec.ema_beta) if spec.ema else None
  metrics['grad_norm'] = optax.tree.norm(grads)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            teacher=teacher)
  return new_state, metrics


# ------------------------------------------------------- non-finite guard (config.train.nan_policy)
def guard_nonfinite(old: TrainState, new: TrainState, metrics: dict, *,
                    skip: bool) -> tuple[TrainState, dict]:
  """Flags a step whose loss, gradient norm or new parameters are not finite.

  Composed after ``train_step`` inside the same jit (train.py), so ``train_step`` itself is
  unchanged. Adds ``metrics['nonfinite']`` (1.0 / 0.0). With ``skip=True`` a flagged step keeps
  the old params, optimizer state and teacher; ``step`` still advances, so the data position and
  the per-step randomness stay those of the uninterrupted schedule.
  """
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
  for leaf in jax.tree.leaves(new.params):  # catches a non-finite update (e.g. lr overflow)
    finite &= jnp.isfinite(leaf).all()
  metrics = {**metrics, 'nonfinite': 1.0 - finite.astype(jnp.float32)}
  if skip:
    keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(finite, a, b), n, o)
    new = new.replace(params=keep(new.params, old.params),
                      opt_state=keep(new.opt_state, old.opt_state),
                      teacher=keep(new.teacher, old.teacher))
  return new, metrics


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *,
              model: MultiModalModel) -> dict:
  """Sums of correct predictions and losses over one (padded) eval batch.

  Evaluates the student and, when present, the teacher: the fused head and each uni-modal head
  on unmasked features. ``batch['mask']`` ``[B]`` marks real (1) vs padding (0) examples.

  Returns:
    {'count': n, '<who>/fused': #correct, '<who>/<m>': #correct, '<who>/loss_sum': sum CE}.
  """
  labels = batch['label']
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  feats = model.trunk_features(state.frozen, batch)
  out = {'count': mask.sum()}
  weights = {'student': state.params}
  if state.teacher is not None:
    weights['teacher'] = state.teacher
  for who, p in weights.items():
    h = model.encode_all(p['encoders'], p['norms'], state.frozen, feats)
    z = model.fused_logits(p['fused_head'], h, train=False)
    logp = jax.nn.log_softmax(losses.at_least_f32(z))
    nll = -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]
    out[f'{who}/loss_sum'] = (nll * mask).sum()
    out[f'{who}/fused'] = (losses.correct(z, labels) * mask).sum()
    for m, zm in model.uni_logits(p['uni_heads'], h, train=False).items():
      out[f'{who}/{m}'] = (losses.correct(zm, labels) * mask).sum()
  return out
