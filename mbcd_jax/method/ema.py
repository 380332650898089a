"""The weight-averaging (EMA) teacher: Theta_EMA <- beta Theta_EMA + (1 - beta) Theta, per step.

The teacher averages every trainable parameter: the encoders' trainable parts and the fused head
(which Eq. 8's teacher prediction uses), plus the uni-modal heads, which training never reads
from the teacher but which let us report the teacher's per-modality accuracy. Frozen trunks are
not averaged: an average of a constant is the constant only up to float rounding, and keeping
one copy lets student and teacher share the trunk's forward pass.
"""
import optax


def init(params):
  """The teacher starts as a copy of the student (the port's deepcopy)."""
  return params


def update(teacher, student, beta: float):
  """One EMA step: ``beta * teacher + (1 - beta) * student``, leaf by leaf."""
  return optax.incremental_update(student, teacher, step_size=1.0 - beta)
