"""Deep-RL agents (A2D, "Auto-Agent-Distiller"): the environments agents are
searched on and the teacher agents a search distils from.

Modules: `envs` (gymnax's pure-JAX games, vectorised under `vmap`),
`networks` (actor-critic agents: a torso shared by a policy head and a value
head), `ppo` (PPO for those agents: the whole update one jitted program,
training with checkpoints, evaluation over whole episodes), `distill`
(A2D's actor and critic distillation terms).
"""
