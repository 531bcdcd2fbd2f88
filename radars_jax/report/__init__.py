"""A report of a workdir: cell drawings, alpha heatmaps, curves, one HTML page.

    python -m radars_jax.report WORKDIR      # prints WORKDIR/report/index.html

`write_report(workdir)` (called at the end of every search and training)
writes `WORKDIR/report/`:

- `cell_normal.png`, `cell_reduce.png` (DARTS genotype) or `cell.png`
  (NAS-Bench-201): the found cell, edges labelled with their op and coloured
  by op family (convolution / pooling / skip / none).
- `alphas.png`: softmax(alpha) over the active ops of each choice point at
  the end of the search (rows: choice points; columns: the space's ops).
- `curves_<prefix>.png`: one figure per metric prefix of `metrics.jsonl`
  (`dnas/...`, `train/...`, ...), one panel per metric.
- RADARS, from `history.json`: `radars_rewards.png` (reward per iteration),
  `radars_alive.png` (alive ops per choice point and iteration),
  `radars_policy.png` (final controller probabilities), `radars_progress.png`
  (entropy, k, step memory, ... per iteration).
- `index.html`: the summary and evaluation scalars, the genotype as text and
  every picture with a caption (relative links: the folder can be moved).

Only what the workdir holds is drawn; a missing optional file is skipped and
a picture that cannot be drawn from malformed data is listed on the page
instead of failing the run. A workdir with neither `summary.json` (search)
nor `eval.json` (training) is a `UserError`.

Rendering uses matplotlib's Agg canvas directly (`Figure` objects, no
pyplot): nothing is shown on screen, no global figure is left open and the
backend of a notebook that calls `write_report` is left as it was.

Modules: `page` (reading the workdir, the HTML page, `write_report`, the
command line), `cells` (cell drawings), `plots` (alphas, curves, RADARS
history), `heatmaps` (the labelled heatmap they share), `style` (colours, op
families, figures).
"""
from radars_jax.report.page import write_report

__all__ = ["write_report"]
