"""The RADARS loop (`loop`): the PPO controller, the memory cost model, the
programs each subspace trains with, the loop's typed state, its background
compile queue and its summary."""
