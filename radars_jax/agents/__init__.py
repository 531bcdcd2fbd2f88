"""Deep-RL agents (A2D, "Auto-Agent-Distiller"): the environments agents are
searched on and the teacher agents a search distils from.

Modules: `envs` (gymnax's pure-JAX games, vectorised under `vmap`),
`networks` (actor-critic agents: a torso shared by a policy head and a value
head), `ppo` (PPO for those agents: the whole update one jitted program,
training with checkpoints, evaluation over whole episodes), `distill`
(A2D's actor and critic distillation terms), `supernet` (the agent search
space), `a2d` (A2D's loss and search), `run` (`method=a2d`: teacher,
searches, retraining, evaluation) and `radars_search` (`method=radars` on
the agent space: the RADARS loop with A2D in each subspace).
"""
