"""The pure train and eval steps: ``(state, batch, rng) -> (state, metrics)``.

One MBCD step (the paper has no algorithm box; this is its order, docs/method.md §5), with the
work shared wherever the math allows:
  0. the student's frozen trunks, once for both student passes below;
  1. uni-modal pass at theta (with DSU when on): features h_k, logits z_k, CE_k — and, from
     one VJP of the same forward pass, every modality's inner gradient grad_k CE_k;
  2. theta'_k = theta_k - alpha grad_k CE_k                         (method/consistency.py)
  3. fused pass at theta' with the AMD mask drawn from z_k's confidences   (method/amd.py)
  4. teacher's fused prediction on unmasked inputs, inference mode, no gradient
                                                                    (method/distill.py)
  5. L = CE_mm + sum_k CE_k + lambda L_dis; Adam step on theta, phi
  6. EMA update of the teacher                                      (method/ema.py)

Forward passes per step, by BatchNorm mode (``config.model.bn_mode``, models.py), for the
inner-step consistency modes (``grad_dot`` and ``off`` have no theta' pass):
  'frozen'  trunk: 1 (inference mode, shared by theta, theta' and the teacher, whose frozen
            variables are the student's); trainable part: 3 (theta, theta', teacher).
  'port'    trunk: 2 (the student's, in training mode, shared by theta and theta'; the
            teacher's, in inference mode on its own averaged variables); trainable part: 3.
            The reference re-runs the frozen trunk for the theta' pass on the same batch: the
            output is the same, so it is computed once, but its BN running statistics are
            updated once per student pass, as there. The trainable part's statistics are
            updated by the theta pass, then by the theta' pass.
A trunk of ``model.eval_trunks`` (the peers' audio trunk, kept in eval mode by their scripts)
runs once per step in inference mode in either BN mode, shared by every pass and the teacher.

The peers' methods (``methods.EXTENSIONS``; ``mbcd_jax/extensions.py``) use the same step with
AMD, consistency and MBCD's distillation off: one training pass gives the embeddings and
logits, the method adds its terms (and its extra parameters, in ``params['extra']``, its
non-trained state in ``Weights.extra_state``), and a method with its own teacher (CMRF's
moving average) gets the teacher's embeddings and updates it after the optimizer step.
Nothing here depends on which method it is.
"""
import functools
from typing import Any, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from mbcd_jax import extensions, models
from mbcd_jax.method import amd, consistency, distill, ema, losses
from mbcd_jax.encoders import batchnorm
from mbcd_jax.methods import MethodSpec
from mbcd_jax.models import MultiModalModel

PyTree = Any
_DSU_STREAM = 0x05D5   # fold_in constant: DSU's randomness, apart from dropout's and AMD's
_FEATURE_DROPOUT_STREAM = 0xFD   # the embedding dropout of the peers' model variant
_EXTENSION_STREAM = 0xE7         # a plug-in method's own randomness
_EXTENSION_INIT_STREAM = 0xE8
# The batch key of each example's position among the run's source domains (train.jit_steps
# derives it from the loaders' 'domain', the dataset's own domain index).
SOURCE_KEY = 'source'


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes: one ``models.Weights`` per network.

  The BN mode decides what each network's weights contain (``models.Weights``):
    'frozen'  student: params, frozen (BN statistics inside), extra_state; teacher: the
              average of params and extra_state, ``frozen=None`` (it reads the student's,
              never updated: one copy of the frozen trunk), ``batch_stats=None``.
    'port'    student: params, frozen (without BN statistics), batch_stats (updated every
              step), extra_state; teacher: the average of each of them (the reference
              averages the encoders' whole state), the ``eval_trunks`` trunks the student's
              own variables (``MultiModalModel.share_trunks``).

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    student: the trained network (``models.Weights``).
    teacher: the EMA teacher (or a plug-in method's own average of the student), or None for
      methods without one. Read it through :func:`weights`, which resolves ``frozen=None``.
    opt_state: optax state for ``student.params``.
  """
  step: jax.Array
  student: models.Weights
  teacher: models.Weights | None
  opt_state: PyTree


def weights(state: TrainState, who: str = 'student') -> models.Weights:
  """The variables of the student or of the teacher, for ``MultiModalModel.predict``: the one
  place a teacher's ``frozen=None`` becomes the student's ``frozen``."""
  if who == 'student':
    return state.student
  if who != 'teacher':
    raise ValueError(f"who must be 'student' or 'teacher', got {who!r}")
  if state.teacher is None:
    raise ValueError('this state has no EMA teacher (the method has none)')
  if state.teacher.frozen is None:
    return state.teacher.replace(frozen=state.student.frozen)
  return state.teacher


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Adam with L2 weight decay added to the gradient, as ``torch.optim.Adam(weight_decay=…)``
  (coupled, not AdamW), constant learning rate (the port has no schedule)."""
  return optax.chain(
      optax.add_decayed_weights(optim_config.weight_decay),
      optax.adam(optim_config.lr, b1=optim_config.b1, b2=optim_config.b2,
                 eps=optim_config.eps))


def make_state(model: MultiModalModel, spec: MethodSpec, tx: optax.GradientTransformation,
               params: PyTree, frozen: PyTree, extra_state: PyTree | None = None
               ) -> TrainState:
  """A step-0 state from the student's variables.

  Args:
    params: trainable parameters.
    frozen: the non-trained variables with the BN statistics inside (as ``model.init`` and
      ``models.load_pretrained`` give them); in the 'port' BN mode they are moved out to
      ``batch_stats``. The teacher (if any) starts as a copy of the whole student, as the
      reference's deepcopy.
    extra_state: a plug-in method's non-trained state (its parameters are in ``params``).
  """
  batch_stats = None
  if model.trains_bn:
    frozen, batch_stats = models.split_batch_stats(frozen, model.eval_trunks)
  student = models.Weights(params, frozen, batch_stats, extra_state)
  teacher = None
  if spec.has_teacher:
    # 'frozen' BN mode: frozen=None, the student's (TrainState).
    teacher = models.Weights(ema.init(params), ema.init(frozen) if model.trains_bn else None,
                             ema.init(batch_stats), ema.init(extra_state))
  return TrainState(step=jnp.zeros((), jnp.int32), student=student, teacher=teacher,
                    opt_state=tx.init(params))


def init_state(model: MultiModalModel, spec: MethodSpec, tx: optax.GradientTransformation,
               rng: jax.Array, example_batch: Mapping[str, jax.Array], *,
               loaded: frozenset = frozenset()) -> TrainState:
  """Initialises the student, the optimizer and (if the method has one) the teacher; a
  plug-in method's parameters go to ``params['extra']``. ``loaded``: the encoder parts the
  caller replaces by pretrained weights (``MultiModalModel.init``: shapes only)."""
  params, frozen = model.init(rng, example_batch, loaded=loaded)
  extra_state = None
  if spec.extension is not None:
    ext = spec.extension
    params['extra'], extra_state = ext.init(jax.random.fold_in(rng, _EXTENSION_INIT_STREAM),
                                            model.feature_dims, model.modalities, ext.hparams)
  return make_state(model, spec, tx, params, frozen, extra_state)


def student_variables(state: TrainState) -> tuple[PyTree, PyTree]:
  """``(params, frozen with the BN statistics inside)``: the inverse of :func:`make_state`'s
  split, e.g. to load pretrained weights into a fresh state."""
  s = state.student
  return s.params, models.merge_batch_stats(s.frozen, s.batch_stats)


class _UniPass(NamedTuple):
  """The uni-modal pass at theta (step 1)."""
  h: dict              # modality -> [B, D_m] normalised features
  z: dict              # modality -> [B, C] uni-modal logits
  ces: dict            # modality -> CE_k
  moments: dict        # modality -> BN moments of this pass ('port'), else None
  encode_vjp: Any      # VJP of theta -> h, when the consistency mode needs gradients
  grads: PyTree        # grad_theta_k CE_k for every k, idem


class ExtensionInputs(NamedTuple):
  """What a plug-in method's terms read beyond the batch (``extensions.StepView``)."""
  state: PyTree                               # the student's Weights.extra_state
  step: jax.Array                             # 0-based index of this optimizer step
  teacher: extensions.TeacherView | None      # for a method with its own teacher
  sources: jax.Array | None = None            # [B] positions in config.data.sources


def loss_fn(params: PyTree, frozen: PyTree, feats: Mapping[str, jax.Array],
            labels: jax.Array, p_teacher: jax.Array | None, rng: jax.Array, *,
            model: MultiModalModel, spec: MethodSpec,
            batch_stats: PyTree | None = None,
            extension_inputs: ExtensionInputs | None = None
            ) -> tuple[jax.Array, tuple[dict, list, PyTree]]:
  """Eq. 9's objective for one batch.

  Args:
    params: trainable student parameters (differentiated).
    frozen: frozen variables.
    feats: modality -> trunk output ``[B, ...]`` (constant when the trunk is frozen).
    labels: ``[B]`` int32.
    p_teacher: ``[B, C]`` teacher probabilities for distillation, or None.
    rng: dropout / AMD / DSU randomness for this step.
    batch_stats: the student's BN running statistics ('port' BN mode; present for the
      variables' sake, a training pass normalises with batch statistics).
    extension_inputs: for a plug-in method (``spec.extension``).
  Returns:
    (loss, (scalar metrics, [BN moments of each student pass, in order] — empty in the
    'frozen' BN mode —, the plug-in method's new state or None)).
  """
  r_uni, r_fused, r_amd = jax.random.split(rng, 3)
  r_dsu = jax.random.fold_in(rng, _DSU_STREAM) if model.dsu else None
  r_drop = (jax.random.fold_in(rng, _FEATURE_DROPOUT_STREAM) if model.feature_dropout > 0
            else None)
  norms = params['norms']

  def encode(enc_params, dsu_rng=None):
    return model.encode_all_train(enc_params, norms, frozen, feats, batch_stats,
                                  dsu_rng=dsu_rng, dropout_rng=r_drop)

  def uni_loss(h):
    # Probe heads (erm / ema) read stop-gradient features so they cannot shape the encoders.
    h = h if spec.train_unimodal else jax.lax.stop_gradient(h)
    z = model.uni_logits(params['uni_heads'], h, train=True, rng=r_uni)
    ces = {m: losses.cross_entropy(z[m], labels) for m in model.modalities}
    return sum(ces.values()), (z, ces)

  # 1. Uni-modal pass at theta (DSU only here, as the reference). The inner gradients come
  #    from the VJP of this same forward pass.
  if consistency.needs_unimodal_grads(spec.consistency):
    h, encode_vjp, moments = jax.vjp(lambda e: encode(e, r_dsu), params['encoders'],
                                     has_aux=True)
    (_, (z_uni, ces)), dce_dh = jax.value_and_grad(uni_loss, has_aux=True)(h)
    uni = _UniPass(h, z_uni, ces, moments, encode_vjp,
                   consistency.modality_grads(encode_vjp, dce_dh))
  else:
    h, moments = encode(params['encoders'], r_dsu)
    _, (z_uni, ces) = uni_loss(h)
    uni = _UniPass(h, z_uni, ces, moments, None, None)
  ce_uni = sum(uni.ces[m] for m in model.modalities)

  # AMD from the pre-update uni-modal confidences (the reference computes them before the
  # inner step); masks drawn in the model's modality order whatever the branch above.
  p_drop = amd.drop_probs(uni.z, spec.amd, base=spec.amd_base, fixed_p=spec.amd_fixed_p,
                          order=model.modalities)
  keep = (amd.sample_keep(r_amd, p_drop, labels.shape[0], model.modalities)
          if spec.amd != 'off' else None)

  def fused_ce(h_):
    z = model.fused_logits(params['fused_head'], h_, keep, train=True, rng=r_fused)
    return losses.cross_entropy(z, labels), z

  # 2-3. The fused term: the one decision on the consistency mode.
  metrics, passes = {}, [uni.moments]
  if spec.consistency in ('inner_first_order', 'inner_second_order'):
    # At theta' = theta - alpha grad CE_k: a second training pass, without DSU.
    enc_prime = consistency.inner_update(
        params['encoders'], uni.grads, spec.alpha,
        second_order=spec.consistency == 'inner_second_order')
    h_prime, moments_prime = encode(enc_prime)
    passes.append(moments_prime)
    ce_mm, z_mm = fused_ce(h_prime)
    loss = ce_mm + ce_uni
  elif spec.consistency == 'grad_dot':
    # Eq. 6's explicit penalty at theta, the features of step 1 reused.
    (ce_mm, z_mm), dmm_dh = jax.value_and_grad(fused_ce, has_aux=True)(uni.h)
    penalty = consistency.grad_dot_penalty(
        uni.grads, consistency.modality_grads(uni.encode_vjp, dmm_dh), spec.alpha)
    metrics['grad_dot_penalty'] = penalty
    loss = ce_mm + ce_uni + penalty
  else:
    ce_mm, z_mm = fused_ce(uni.h)
    loss = ce_mm + ce_uni

  # A plug-in method's terms on the same pass ('own': they replace the classification loss).
  new_extra_state = None
  if spec.extension is not None:
    ext, ext_in = spec.extension, extension_inputs
    view = extensions.StepView(
        params=params['extra'], state=ext_in.state, feats=uni.h, uni_logits=uni.z,
        fused_logits=z_mm, labels=labels, rng=jax.random.fold_in(rng, _EXTENSION_STREAM),
        step=ext_in.step, modalities=model.modalities, teacher=ext_in.teacher,
        sources=ext_in.sources)
    terms, ext_metrics, new_extra_state = ext.terms(view, ext.hparams)
    loss = sum(terms.values()) + (loss if ext.classification == 'fused' else 0.0)
    metrics.update({f'{ext.name}/{k}': v for k, v in terms.items()})
    metrics.update({f'{ext.name}/raw/{k}': v for k, v in ext_metrics.items()})

  # 4-5. Distillation from the teacher's fused prediction into the fused and uni-modal branches.
  if spec.distill:
    l_dis, kl_terms = distill.distillation_loss(
        p_teacher, z_mm, uni.z, lambda_mm=spec.lambda_mm, lambda_um=spec.lambda_um,
        temperature=spec.temperature)
    loss = loss + l_dis
    metrics.update(kl_terms)

  metrics.update({'loss': loss, 'ce_fused': ce_mm,
                  'train_acc_fused': losses.correct(z_mm, labels).mean()})
  for m in model.modalities:
    metrics[f'ce_uni/{m}'] = uni.ces[m]
    metrics[f'p_drop/{m}'] = p_drop[m]
  return loss, (metrics, passes if model.trains_bn else [], new_extra_state)


def update_batch_stats(model: MultiModalModel, batch_stats: PyTree, trunk_moments: dict,
                       passes: list) -> PyTree:
  """Folds one step's BN moments into the running statistics, pass by pass.

  Args:
    batch_stats: ``{'encoders': {m: {'trunk': ..., 'stage': ...}}}`` running statistics.
    trunk_moments: modality -> moments of the shared frozen-trunk run (None entries when the
      trunk is trainable: then each pass carries its own).
    passes: per student pass, modality -> {'stage': moments[, 'trunk': moments]}.
  """
  stats = batch_stats['encoders']
  for pass_moments in passes:
    full = {}
    for m in model.modalities:
      full[m] = dict(pass_moments[m])
      if model.freeze_trunk:   # the shared output stands for one trunk run per pass
        full[m]['trunk'] = trunk_moments[m] if model.bn_trains(m, 'trunk') else {}
    stats = batchnorm.update_running(stats, full)
  return {'encoders': stats}


def per_term_grad(fn, ext: extensions.Extension):
  """``jax.grad(fn, has_aux=True)`` for a plug-in with an ``Extension.grad_transform``.

  ``fn``: :func:`loss_fn` with its static arguments bound. The method's weighted terms are read
  back from the metrics ``loss_fn`` records (``'<name>/<term>'``; they sum to the loss, the
  extension's classification being 'own'); one forward pass, one VJP, one backward pass per
  term (cotangent 1 on that term, 0 on the others), and ``ext.grad_transform`` turns the
  per-term gradients into the update's. Returns ``(params, *args, **kwargs) -> (grads, aux)``.
  """
  prefix, raw = f'{ext.name}/', f'{ext.name}/raw/'

  def terms_of(params, *args, **kwargs):
    _, aux = fn(params, *args, **kwargs)
    metrics = aux[0]
    terms = {k[len(prefix):]: v for k, v in metrics.items()
             if k.startswith(prefix) and not k.startswith(raw)}
    return terms, aux

  def grad_fn(params, *args, **kwargs):
    terms, vjp, aux = jax.vjp(lambda p: terms_of(p, *args, **kwargs), params, has_aux=True)
    term_grads = {t: vjp({k: jnp.ones_like(v) if k == t else jnp.zeros_like(v)
                          for k, v in terms.items()})[0] for t in terms}
    method_metrics = {k[len(raw):]: v for k, v in aux[0].items() if k.startswith(raw)}
    return ext.grad_transform(term_grads, method_metrics, params, ext.hparams), aux

  return grad_fn


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
  port = model.trains_bn
  student = state.student
  # 0. The student's frozen trunks once per step, shared by its theta and theta' passes.
  feats, trunk_moments = model.trunk_features_train(student.frozen, batch, student.batch_stats)

  # 4. Teacher's fused prediction on unmasked inputs (inference mode, no gradient). The trunks
  #    whose variables are the student's (every trunk in the 'frozen' BN mode, the eval
  #    trunks in 'port') share their output.
  p_teacher = None
  shared = model.shared_trunks(feats)
  if spec.distill:
    z_teacher = model.predict(weights(state, 'teacher'), batch, feats=shared)['fused']
    p_teacher = distill.teacher_probs(z_teacher, spec.temperature)
  ext_in = None
  if spec.extension is not None:
    teacher_view = None
    if spec.extension.teacher != 'none':
      _, h_teacher = model.predict(weights(state, 'teacher'), batch, feats=shared,
                                   with_features=True)
      teacher_view = extensions.TeacherView(
          jax.lax.stop_gradient(state.teacher.params['extra']), state.teacher.extra_state,
          jax.lax.stop_gradient(h_teacher))
    ext_in = ExtensionInputs(student.extra_state, state.step, teacher_view,
                             batch.get(SOURCE_KEY))

  grad_fn = jax.grad(functools.partial(loss_fn, model=model, spec=spec), has_aux=True)
  if spec.extension is not None and spec.extension.grad_transform is not None:
    grad_fn = per_term_grad(functools.partial(loss_fn, model=model, spec=spec), spec.extension)
  grads, (metrics, passes, extra_state) = grad_fn(
      student.params, student.frozen, feats, batch['label'], p_teacher, rng,
      batch_stats=student.batch_stats, extension_inputs=ext_in)
  updates, opt_state = tx.update(grads, state.opt_state, student.params)
  params = optax.apply_updates(student.params, updates)
  metrics['grad_norm'] = optax.tree.norm(grads)
  new_student = student.replace(params=params, extra_state=extra_state)
  if port:
    new_student = new_student.replace(batch_stats=update_batch_stats(
        model, student.batch_stats, trunk_moments, passes))
  new = state.replace(step=state.step + 1, student=new_student, opt_state=opt_state)
  # 6. The teacher after the optimizer step (and, in 'port' mode, after this step's
  #    statistics): MBCD's EMA, or a plug-in method's own average of the whole student.
  if spec.has_teacher:
    if spec.ema:
      average = lambda old, cur: ema.update(old, cur, spec.ema_beta)
    else:
      ext = spec.extension
      average = lambda old, cur: ext.teacher_update(old, cur, state.step, ext.hparams)
    t = state.teacher
    teacher = t.replace(params=average(t.params, params),
                        extra_state=average(t.extra_state, new_student.extra_state))
    if port:   # (else the teacher's frozen stays None: the student's, TrainState)
      teacher = teacher.replace(
          frozen=model.share_trunks(average(t.frozen, new_student.frozen), new_student.frozen),
          batch_stats=average(t.batch_stats, new_student.batch_stats))
    new = new.replace(teacher=teacher)
  return new, metrics


# ------------------------------------------------------- non-finite guard (config.train.nan_policy)
def guard_nonfinite(old: TrainState, new: TrainState, metrics: dict, *,
                    skip: bool) -> tuple[TrainState, dict]:
  """Flags a step whose loss, gradient norm or new parameters are not finite.

  Composed after ``train_step`` inside the same jit (train.py), so ``train_step`` itself is
  unchanged. Adds ``metrics['nonfinite']`` (1.0 / 0.0). With ``skip=True`` a flagged step keeps
  the old params, optimizer state, BN statistics and teacher; ``step`` still advances, so the
  data position and the per-step randomness stay those of the uninterrupted schedule.
  """
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
  # catches a non-finite update (e.g. lr overflow) or running statistic
  for leaf in jax.tree.leaves((new.student.params, new.student.batch_stats)):
    finite &= jnp.isfinite(leaf).all()
  metrics = {**metrics, 'nonfinite': 1.0 - finite.astype(jnp.float32)}
  if skip:
    keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(finite, a, b), n, o)
    s, o = new.student, old.student   # the student's frozen never changes in a step
    new = new.replace(
        student=s.replace(params=keep(s.params, o.params),
                          batch_stats=keep(s.batch_stats, o.batch_stats),
                          extra_state=keep(s.extra_state, o.extra_state)),
        opt_state=keep(new.opt_state, old.opt_state), teacher=keep(new.teacher, old.teacher))
  return new, metrics


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *,
              model: MultiModalModel) -> dict:
  """Sums of correct predictions and losses over one (padded) eval batch.

  Evaluates the student and, when present, the teacher, each in inference mode on its own
  variables (``model.predict``): the fused head and each uni-modal head on unmasked features.
  ``batch['mask']`` ``[B]`` marks real (1) vs padding (0) examples.

  Returns:
    {'count': n, '<who>/fused': #correct, '<who>/<m>': #correct, '<who>/loss_sum': sum CE}.
  """
  labels = batch['label']
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  # The trunks student and teacher share (all in the 'frozen' BN mode): run once.
  shared = model.shared_trunk_features(state.student.frozen, batch)
  out = {'count': mask.sum()}
  for who in ('student', 'teacher') if state.teacher is not None else ('student',):
    logits = model.predict(weights(state, who), batch, feats=shared)
    z = logits['fused']
    logp = jax.nn.log_softmax(losses.at_least_f32(z))
    nll = -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]
    out[f'{who}/loss_sum'] = (nll * mask).sum()
    out[f'{who}/fused'] = (losses.correct(z, labels) * mask).sum()
    for m in model.modalities:
      out[f'{who}/{m}'] = (losses.correct(logits[m], labels) * mask).sum()
  return out
