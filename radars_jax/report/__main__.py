"""`python -m radars_jax.report WORKDIR`: writes WORKDIR/report/ and prints
the path of its index.html (exit 2, one line on stderr, on a `UserError`)."""
import sys

from radars_jax.report import page

if __name__ == "__main__":
  sys.exit(page.main())
