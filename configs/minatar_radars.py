"""RADARS on MinAtar Breakout's agent space: the memory budget, the controller
and the subspace loop of the image search, with A2D inside each subspace.

    python -m radars_jax.main --config configs/minatar_radars.py --workdir runs/radars_agents
    python -m radars_jax.main --config configs/minatar_radars.py --workdir runs/radars_agents_2 \\
        --config.agents.teacher=runs/a2d      # reuse an earlier run's teacher

The agent space and PPO's settings are configs/minatar.py's (8 ops, a
teacher trained first). A PPO update over the whole space takes 977 MB on
the CPU (rollout and minibatch gradients; docs/performance.md), and one op
per edge at most 416 MB: the 0.7 GB budget holds 2 ops per edge. Each
iteration samples 4 subspaces, each searched by A2D for
`agents.subspace_updates` updates and rewarded with its derived agent's
return as a fraction of the teacher's; the controller prunes, and after at
most 4 iterations a final A2D search over what is left gives the agent,
retrained with distillation and evaluated beside the teacher.
"""
import importlib.util
from pathlib import Path


def get_config():
  spec = importlib.util.spec_from_file_location("minatar", Path(__file__).with_name("minatar.py"))
  minatar = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(minatar)
  config = minatar.get_config()
  config.method = "radars"
  config.memory_budget_gb = 0.7
  config.radars.max_iterations = 4
  config.controller.samples_per_iteration = 4
  return config
