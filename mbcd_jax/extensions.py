"""How a method plugs into the shared train step: its extra parameters and its loss terms.

MBCD, its ablations and the ERM / EMA baselines are switches of the step itself
(``methods.MethodSpec``). Every other method (``mbcd_jax/baselines/``) is one module that
defines an :class:`Extension` and one registry entry in ``methods.py``; the step never branches
on a method's name. What the step gives a method, once per training step, is a
:class:`StepView`: the student's embeddings and logits of the batch (one training pass, the
model variant the method asked for), the labels, a PRNG key of its own, the step index and —
for a method with a teacher — the teacher's embeddings. What it takes back is a dict of
already-weighted scalar terms to add to the loss, metrics, and the method's updated state
(e.g. its projectors' BatchNorm statistics).

Lifecycle, in the step's terms (``mbcd_jax/step.py``):
  init     ``extension.init(rng, dims, modalities, hp) -> (params, state)``: trained
           parameters (``TrainState.student.params['extra']``, in the optimizer like every
           other parameter) and non-trained state (``TrainState.student.extra_state``).
  loss     ``extension.terms(view, hp) -> (terms, metrics, new_state)``. With
           ``classification='fused'`` the step adds the fused head's CE (and the uni-modal
           probes' CE, which cannot reach the encoders) to the terms; with ``'own'`` the terms
           are the whole loss (the method's own classification loss is among them).
  teacher  ``teacher='sma'`` (or the spec's EMA): the teacher copies the whole student —
           ``params`` including ``extra``, BN statistics, ``extra_state`` — and is updated after
           every optimizer step by ``extension.teacher_update(teacher, student, step, hp)``.
  gradient ``extension.grad_transform`` unset: the gradient of the summed loss (one backward
           pass). Set (``classification='own'``, a method that reshapes per-term gradients,
           GMP): one backward pass per term, and ``grad_transform(term_grads, metrics, params,
           hp) -> grads`` makes the update's gradient (``step.per_term_grad``).
"""
import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
from mbcd_jax.errors import ConfigError

PyTree = Any
CLASSIFICATION = ('fused', 'own')
TEACHERS = ('none', 'sma')


class TeacherView(NamedTuple):
  """The teacher's side of a step (inference mode, no gradient)."""
  params: PyTree                       # the teacher's copy of ``params['extra']``
  state: PyTree                        # the teacher's copy of ``extra_state``
  feats: Mapping[str, jax.Array]       # modality -> ``[B, D_m]`` embeddings


class StepView(NamedTuple):
  """What a method sees of one training step (all arrays traced).

  Attributes:
    params: the method's trained parameters (``TrainState.student.params['extra']``,
      differentiated).
    state: the method's non-trained state (``TrainState.student.extra_state``).
    feats: modality -> ``[B, D_m]`` student embeddings of the training pass: the tensor that
      feeds both the uni-modal head and (concatenated) the fused head.
    uni_logits: modality -> ``[B, C]``; fused_logits: ``[B, C]``.
    labels: ``[B]`` int32.
    rng: this step's key for the method's own randomness.
    step: int32 scalar, 0-based index of this optimizer step.
    modalities: the model's modality order.
    teacher: a :class:`TeacherView` when the method has a teacher, else None.
    sources: ``[B]`` int32, each example's source domain as its position in
      ``config.data.sources`` (the order of the command line), for the methods that train
      against the source domains (JAT's and GMP's discriminators); None where the batch
      carries no domain.
  """
  params: PyTree
  state: PyTree
  feats: Mapping[str, jax.Array]
  uni_logits: Mapping[str, jax.Array]
  fused_logits: jax.Array
  labels: jax.Array
  rng: jax.Array
  step: jax.Array
  modalities: tuple[str, ...]
  teacher: TeacherView | None = None
  sources: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Extension:
  """A method beyond MBCD's switches (hashable: part of the static ``MethodSpec``).

  Attributes:
    name: the method's name (``config.method.name``) and its hyper-parameter group
      (``config.method.<name>.*``).
    hparams: a frozen dataclass of the method's coefficients; its defaults declare the config
      group, the config's values replace them at ``methods.resolve``.
    init: ``(rng, dims, modalities, hparams) -> (params, state)``.
    terms: ``(StepView, hparams) -> (terms, metrics, new_state)``.
    classification: 'fused' (the step adds the fused CE) | 'own' (the terms hold the
      classification loss; the uni-modal heads are trained through them).
    model: the model variant the method runs with, ``((config.model key, value), ...)`` over
      ``methods.MODEL_DEFAULTS``' keys (features, heads, BN per trunk, DSU, audio tail,
      initialisers): it replaces ``config.model.defaults`` wherever the config leaves the key
      unset (``methods.model_variant``); the peers' share ``baselines.SCRIPTS_NETWORKS``.
    teacher: 'none' | 'sma' (a teacher other than the spec's EMA).
    teacher_update: ``(teacher, student, step, hparams) -> teacher`` for ``teacher='sma'``.
    evaluated: which network is the method's model: 'student' | 'teacher'.
    recipes: ``(dataset, modalities, target) -> {'epochs': n, <hparam>: value}`` overrides of
      the authors' README commands (``config.train.recipe='authors'``), or None; a
      ``'weight_decay'`` entry sets ``config.optim.weight_decay`` (a script whose optimizer
      has none).
    views: transformed views of each clip in a training batch (``input_pipeline``): 1, or 2
      for a method contrasting two augmentations of the same clip (NEL); the step's batch is
      then ``[view 1 of the B clips; view 2 of the same B clips]``, 2B rows, labels repeated.
      Where the train transform is not random (the embedded synthetic benchmark) the two
      views are identical.
    grad_transform: ``(term_grads, metrics, params, hparams) -> grads``, or None (the gradient
      of the summed terms). ``term_grads``: term name -> the gradient of that weighted term
      over every trained parameter (``params``' structure); ``metrics``: the method's own
      metrics of the step (``terms``' second output, e.g. coefficients the transform reads).
      Needs ``classification='own'`` (the terms are then the whole loss).
    frozen_bn_caution: why ``config.model.bn_mode='frozen'`` (set explicitly: the method's own
      variant may differ) is known to break the method (empty: nothing known); ``train.build``
      logs it as a warning for such a run.
  """
  name: str
  hparams: Any
  init: Callable
  terms: Callable
  classification: str = 'fused'
  model: tuple = ()
  teacher: str = 'none'
  teacher_update: Callable | None = None
  evaluated: str = 'student'
  recipes: Callable | None = None
  views: int = 1
  frozen_bn_caution: str = ''
  grad_transform: Callable | None = None

  def __post_init__(self):
    if self.classification not in CLASSIFICATION:
      raise ValueError(f'{self.name}: classification must be one of {CLASSIFICATION}')
    if self.teacher not in TEACHERS:
      raise ValueError(f'{self.name}: teacher must be one of {TEACHERS}')
    if not (isinstance(self.views, int) and self.views >= 1):
      raise ValueError(f'{self.name}: views must be an int >= 1, got {self.views!r}')
    if self.grad_transform is not None and self.classification != 'own':
      raise ValueError(f"{self.name}: grad_transform needs classification='own' (the terms "
                       'must be the whole loss)')
    if self.teacher != 'none' and self.teacher_update is None:
      raise ValueError(f'{self.name}: teacher={self.teacher!r} needs a teacher_update')

  def with_hparams(self, values: Mapping[str, Any]) -> 'Extension':
    """A copy whose hyper-parameters take ``values`` (unknown names refused)."""
    fields = {f.name for f in dataclasses.fields(self.hparams)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ConfigError(f'config.method.{self.name}: unknown keys {unknown}; known: '
                       f'{sorted(fields)}')
    return dataclasses.replace(self, hparams=dataclasses.replace(self.hparams, **values))
