"""A2D on MinAtar Breakout: search a small agent, distilling a PPO teacher.

    python -m radars_jax.main --config configs/minatar.py --workdir runs/a2d
    python -m radars_jax.main --config configs/minatar.py --workdir runs/a2d_2 \\
        --config.agents.teacher=runs/a2d      # reuse that run's teacher

The teacher is the standard MinAtar actor-critic (one 3x3 convolution of 16
channels, 128 units) trained with PPO; the student's torso is a cell
supernet (a 3x3 stem to 8 channels, one NAS-Bench-201 cell over 8 ops, 32
units) searched by single-level DNAS on its own rollouts with the teacher's
policy and value distilled and its expected multiply-adds costed
(`radars_jax.agents`). Then the derived agent is retrained from scratch,
with and without distillation, beside plain DNAS (no distillation) and a
small hand-designed agent of about the same multiply-adds. Every phase is
checkpointed: a killed run started again with the same command resumes.
WORKDIR/summary.json has each agent's mean return over 64 episodes,
multiply-adds, weights and environment steps per second; the report plots
return against multiply-adds.
"""
from radars_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.task = "agents"
  config.method = "a2d"
  config.space.name = "nb201"
  config.space.ops = ("none,skip_connect,avg_pool_3x3,max_pool_3x3,nor_conv_1x1,nor_conv_3x3,"
                      "sep_conv_3x3,dil_conv_3x3")
  config.agents.env = "Breakout-MinAtar"
  return config
