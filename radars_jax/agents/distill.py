"""A2D's distillation terms: a student agent learns from a trained teacher's
actor (policy) and critic (value) on the student's own observations, which
steadies the noisy RL signal a search learns from:

    L_distill = l_actor * KL(pi_teacher || pi_student) + l_critic * (V_student - V_teacher)^2

averaged over a batch. Both are zero where the student equals the teacher.
The teacher's outputs are constants (no gradient flows into the teacher).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def policy_kl(teacher_logits: jax.Array, student_logits: jax.Array) -> jax.Array:
  """KL(pi_teacher || pi_student) per example [...] from logits [..., A]."""
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  teacher_logp = jax.nn.log_softmax(teacher_logits)
  student_logp = jax.nn.log_softmax(student_logits)
  return jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - student_logp), axis=-1)


def distillation_loss(student_logits: jax.Array, student_value: jax.Array,
                      teacher_logits: jax.Array, teacher_value: jax.Array,
                      actor_weight: float, critic_weight: float) -> tuple[jax.Array, dict]:
  """`actor_weight` * mean KL(pi_teacher || pi_student) + `critic_weight` *
  mean (V_student - V_teacher)^2; (loss, {"actor_kl", "critic_mse"})."""
  actor_kl = policy_kl(teacher_logits, student_logits).mean()
  critic_mse = jnp.mean((student_value - jax.lax.stop_gradient(teacher_value)) ** 2)
  return actor_weight * actor_kl + critic_weight * critic_mse, {"actor_kl": actor_kl,
                                                                "critic_mse": critic_mse}
