"""The RADARS paper's comparison: every search method on one setting, with
one memory budget and one time limit, each found architecture retrained.

    python experiments/compare_methods.py --setting digits_nb201 --seeds 3 \\
        --json experiments/results/compare_digits_nb201.json
    python experiments/compare_methods.py --setting digits_mobile --seeds 3 \\
        --json experiments/results/compare_digits_mobile.json
    python experiments/compare_methods.py --setting imagenet_synthetic --seeds 1 \\
        --max-seconds 1200 --json experiments/results/compare_imagenet_synthetic.json

Each (method, seed) is the command a user runs, `python -m radars_jax.main
--config configs/CONFIG --config.method=METHOD --config.seed=SEED`, with
the setting's `memory_budget_gb` and `search.max_seconds` for every method,
in its own workdir. A search ends one of three ways:
  * completed: its genotype is retrained from scratch (`configs/digits_train.py`,
    `--retrain-epochs`) and evaluated on the test split;
  * refused (memory): whole-space `darts` / `single_darts` whose step needs
    more than the budget (the bytes it needs, from `mode=describe`);
  * stopped (time): past `search.max_seconds` (checkpointed; a rerun with a
    larger limit goes on), at its next sample or log step, or, where a
    compile or a step outlasts the limit by `search.overrun_seconds`, by
    its watchdog ending the process.
Per run: the outcome, search seconds, the worst train step's bytes, the
final search's median decision margin, and for completed ones the retrained
test accuracy, weights, FLOPs (multiply-adds, one image) and latency (the
retrained network's jitted forward of `--latency-batch` images, median on
this machine). Per method: means and standard deviations over seeds. The
JSON holds every run; the PNG plots test accuracy against search seconds.

`cifar_synthetic` and `imagenet_synthetic` are the paper's CIFAR-10 and
ImageNet settings (`configs/cifar.py`, `configs/imagenet_mobile.py`: their
spaces, image sizes, batches and 12 GB budget) on synthetic images, for
memory and time only: nothing is retrained, accuracy there means nothing,
and the found network's weights, FLOPs and latency are those of the
retraining config's network. Where a whole-space step is refused for its
program size (`dnas.max_program_ops`) rather than its bytes, its bytes are
`mode=describe`'s with `supernet.depthwise_impl=xla` (the kernels GPUs and
TPUs use: one grouped convolution per depthwise op).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("radars", "rl", "random", "darts", "single_darts")
# setting: (search config, its flags, retraining config, its flags, retrain?)
_SYNTHETIC = {"data.name": "synthetic", "data.channels": 3, "data.test_size": 64}
SETTINGS = {
    "digits_nb201": ("digits.py", {}, "digits_train.py", {}, True),
    "digits_mobile": ("digits_mobile.py", {}, "digits_train.py", {}, True),
    "cifar_synthetic": ("cifar.py", {**_SYNTHETIC, "data.image_size": 32, "data.num_classes": 10,
                                     "data.train_size": 10_000, "data.holdout_size": 1000},
                        "cifar_train.py", {}, False),
    "imagenet_synthetic": ("imagenet_mobile.py",
                           {**_SYNTHETIC, "data.image_size": 224, "data.num_classes": 1000,
                            "data.train_size": 2048, "data.holdout_size": 256},
                           "imagenet_train.py", {}, False),
}


def main_command(config: str, flags: dict, *extra: str) -> subprocess.CompletedProcess:
  """`python -m radars_jax.main --config configs/CONFIG` with `extra`
  arguments and `flags` (config fields), run to its end."""
  return subprocess.run(
      [sys.executable, "-m", "radars_jax.main", f"--config={ROOT / 'configs' / config}",
       *extra, *(f"--config.{k}={v}" for k, v in flags.items())],
      capture_output=True, text=True, cwd=ROOT, timeout=7200,
      env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_main(config: str, workdir: Path, flags: dict) -> tuple[int, str, dict | None]:
  """`main_command` in `workdir`: (exit status, stderr's last line, its
  summary.json or eval.json, None if neither was written)."""
  done = main_command(config, flags, f"--workdir={workdir}", "--config.progress_bar=False")
  last = (done.stderr.strip().splitlines() or [""])[-1]
  for name in ("summary.json", "eval.json"):
    if (workdir / name).exists():
      return done.returncode, last, json.loads((workdir / name).read_text())
  return done.returncode, last, None


def describe_bytes(config: str, flags: dict) -> int | None:
  """The whole space's step bytes by `mode=describe` (nothing trains;
  None where the program is too large to compile)."""
  done = main_command(config, flags, "--config.mode=describe")
  if done.returncode != 0:
    raise RuntimeError(f"describe failed: {done.stderr[-2000:]}")
  return json.loads(done.stdout[done.stdout.index("{"):])["full_space_step_bytes"]


def network_costs(genotype: dict, train_config: str, train_flags: dict, batch: int) -> dict:
  """The retrained network's weights, FLOPs (multiply-adds, one image) and
  latency (median seconds of its jitted forward pass, test mode, of
  `batch` images, timed here), at `train_config`'s sizes; nothing trains."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from radars_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  from radars_jax.radars import hardware  # pylint: disable=import-outside-toplevel
  from radars_jax.retrain import networks, train  # pylint: disable=import-outside-toplevel
  config = config_file(train_config)
  config.update_from_flattened_dict(train_flags)
  image_shape, num_classes = data_lib.dataset_spec(config.data)
  model = train.build_model(genotype, num_classes, config.train, auxiliary=False)
  size = networks.describe_network(model, image_shape)
  variables = networks.abstract_variables(model, image_shape)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  latency = hardware.time_forward(forward, variables,
                                  jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32))
  return {"weights": size["weights"], "flops": size["macs"], "latency_s": latency}


def config_file(name: str):
  """`get_config()` of configs/NAME."""
  sys.path.insert(0, str(ROOT / "configs"))
  return __import__(name[:-3]).get_config()


def _finished(summary: dict, args) -> bool:
  """Whether a search's summary.json (of an earlier run of this script with
  `--workdir`) is its end under `args`: found a genotype, or stopped at
  the same time limit."""
  return bool(summary.get("genotype")) or (summary.get("stopped") == "time" and
                                          summary.get("max_seconds") == args.max_seconds)


def run_one(setting: str, method: str, seed: int, args, tmp: Path) -> dict:
  """One search and, if it completed, its retraining."""
  search_config, search_flags, train_config, train_flags, retrain = SETTINGS[setting]
  flags = {**search_flags, **dict(o.split("=", 1) for o in args.override), "method": method,
           "seed": seed, "memory_budget_gb": args.budget_gb,
           "search.max_seconds": args.max_seconds}
  if method in ("darts", "single_darts"):
    flags["hardware.target"] = None   # (a latency target aims sampled architectures only)
  workdir = tmp / f"{setting}_{method}_{seed}"
  summary_path = workdir / "summary.json"
  if summary_path.exists() and _finished(json.loads(summary_path.read_text()), args):
    rc, last, summary = 0, "", json.loads(summary_path.read_text())   # (a rerun of the script)
  else:
    rc, last, summary = run_main(search_config, workdir, flags)
  row = {"method": method, "seed": seed}
  if rc == 2 and "per step, budget" in last:
    row.update(outcome="refused (memory)", message=last,
               step_bytes=describe_bytes(search_config, flags))
    return row
  if rc == 2 and "dnas.max_program_ops" in last:
    row.update(outcome="refused (program size)", message=last,
               step_bytes=describe_bytes(search_config,
                                         {**flags, "supernet.depthwise_impl": "xla"}))
    return row
  if rc != 0 or summary is None:
    raise RuntimeError(f"{workdir}: exit {rc}: {last}")
  row.update(search_seconds=summary["search_seconds"], step_bytes=summary.get("step_bytes"),
             decision_margin=summary.get("decision_margin_median"))
  if summary.get("stopped"):
    row.update(outcome="stopped (time)", message=summary["stop_reason"])
    return row
  if not retrain:
    row.update(outcome="completed", genotype=summary["genotype"],
               **network_costs(summary["genotype"], train_config,
                               {**train_flags, "data.name": search_flags["data.name"],
                                "data.image_size": search_flags["data.image_size"],
                                "data.num_classes": search_flags["data.num_classes"]},
                               args.latency_batch))
    return row
  genotype_path = workdir / "genotype.json"
  rc, last, evaluated = run_main(train_config, tmp / f"{workdir.name}_train",
                                 {**train_flags, "genotype": genotype_path, "seed": seed,
                                  "train.epochs": args.retrain_epochs})
  if rc != 0 or evaluated is None:
    raise RuntimeError(f"retraining {workdir}: exit {rc}: {last}")
  costs = network_costs(summary["genotype"], train_config, train_flags, args.latency_batch)
  row.update(outcome="completed", genotype=summary["genotype"],
             search_val_accuracy=summary["val_accuracy"],
             test_accuracy=evaluated["test_accuracy"], weights=evaluated["weights"],
             flops=evaluated["flops"], latency_s=costs["latency_s"])
  return row


def aggregate(rows: list[dict]) -> dict:
  """Per method: outcomes counted, and each number's mean and std over
  the runs that have it (a refused run has only its step's bytes)."""
  out = {}
  for method in dict.fromkeys(r["method"] for r in rows):
    mine = [r for r in rows if r["method"] == method]
    stats = {"outcomes": {o: sum(r["outcome"] == o for r in mine)
                          for o in dict.fromkeys(r["outcome"] for r in mine)}}
    for key in ("search_seconds", "step_bytes", "decision_margin", "test_accuracy", "weights",
                "flops", "latency_s"):
      values = [r[key] for r in mine if r.get(key) is not None]
      if values:
        stats[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                      "n": len(values)}
    out[method] = stats
  return out


def table(result: dict) -> str:
  """The per-method table as markdown."""
  def cell(stats, key, scale=1.0, fmt="{:.1f}"):
    if key not in stats:
      return "-"
    s = stats[key]
    return f"{fmt.format(s['mean'] * scale)} ± {fmt.format(s['std'] * scale)}"

  lines = ["| method | outcomes | search s | worst step MB | test acc % | weights | "
           "M FLOPs | latency ms | margin |", "|---" * 9 + "|"]
  for method, stats in result["methods"].items():
    outcomes = ", ".join(f"{n} {o}" for o, n in stats["outcomes"].items())
    lines.append(
        f"| {method} | {outcomes} | {cell(stats, 'search_seconds')} | "
        f"{cell(stats, 'step_bytes', 1e-6)} | {cell(stats, 'test_accuracy', 100.0)} | "
        f"{cell(stats, 'weights', 1.0, '{:,.0f}')} | {cell(stats, 'flops', 1e-6, '{:.2f}')} | "
        f"{cell(stats, 'latency_s', 1e3, '{:.2f}')} | {cell(stats, 'decision_margin', 1.0, '{:.3f}')} |")
  return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
  """Retrained test accuracy against search seconds, one colour per method;
  without retraining, each run's worst step (GB) against its search
  seconds beside the budget (a refused run at 0 s, with what it needs)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from radars_jax.report import style  # pylint: disable=import-outside-toplevel
  fig = style.new_figure(6.0, 4.0)
  ax = fig.add_subplot()
  accuracy = any("test_accuracy" in r for r in result["runs"])
  markers = {"completed": "o", "stopped (time)": "s"}
  for i, method in enumerate(result["methods"]):
    colour = style.SERIES_COLOURS[i % len(style.SERIES_COLOURS)]
    mine = [r for r in result["runs"] if r["method"] == method]
    if accuracy:
      done = [r for r in mine if r["outcome"] == "completed"]
      points = [(r["search_seconds"], 100 * r["test_accuracy"], "o") for r in done]
    else:
      points = [(r.get("search_seconds", 0.0), r["step_bytes"] / 1e9,
                 markers.get(r["outcome"], "x")) for r in mine if r.get("step_bytes")]
    for x, y, marker in points:
      ax.scatter([x], [y], color=colour, marker=marker, s=30)
    ax.scatter([], [], color=colour, label=method if points else f"{method} (none completed)")
  ax.set_xlabel("search seconds")
  if accuracy:
    ax.set_ylabel("retrained test accuracy (%)")
  else:
    ax.axhline(result["budget_gb"], color="grey", linestyle="--", label="budget")
    ax.set_yscale("log")
    ax.set_ylabel("worst train step (GB; x: refused, s: stopped by time)")
  ax.set_title(f"{result['setting']}: budget {result['budget_gb']} GB, "
               f"limit {result['max_seconds']:g} s")
  ax.legend(fontsize=8)
  style.save_figure(fig, path)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--setting", choices=sorted(SETTINGS), default="digits_nb201")
  ap.add_argument("--methods", default=",".join(METHODS))
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--budget-gb", type=float, default=None,
                  help="memory budget of every method (default: the setting config's)")
  ap.add_argument("--max-seconds", type=float, default=1800.0,
                  help="search.max_seconds of every method")
  ap.add_argument("--retrain-epochs", type=int, default=15)
  ap.add_argument("--latency-batch", type=int, default=1)
  ap.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                  help="a config field of every search (e.g. radars.max_iterations=2)")
  ap.add_argument("--json", default=None)
  ap.add_argument("--workdir", default=None,
                  help="keep the runs here (default: a temp dir); run again with the same "
                  "workdir, the searches that ended are read back")
  args = ap.parse_args(argv)
  methods = args.methods.split(",")
  unknown = sorted(set(methods) - set(METHODS))
  if unknown or args.seeds < 1:
    ap.error(f"unknown methods {unknown}" if unknown else "--seeds must be at least 1")
  if any("=" not in o for o in args.override):
    ap.error("--override takes FIELD=VALUE")
  if args.budget_gb is None:
    args.budget_gb = config_file(SETTINGS[args.setting][0]).memory_budget_gb
  with tempfile.TemporaryDirectory() as tmp:
    base = Path(args.workdir) if args.workdir else Path(tmp)
    rows = []
    for method in methods:
      for seed in range(args.seeds):
        row = run_one(args.setting, method, seed, args, base)
        print(json.dumps({k: v for k, v in row.items() if k != "genotype"}), flush=True)
        rows.append(row)
  result = {"setting": args.setting, "budget_gb": args.budget_gb,
            "max_seconds": args.max_seconds, "seeds": args.seeds,
            "retrain_epochs": args.retrain_epochs, "latency_batch": args.latency_batch,
            "methods": aggregate(rows), "runs": rows}
  print(table(result))
  if args.json:
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
  return result


if __name__ == "__main__":
  main()
