"""The one exception type for bad user input.

`radars_jax.main` turns a `UserError` into a single line on stderr and exit
status 2; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input from the user (config, data, workdir): say what and how to fix it."""
