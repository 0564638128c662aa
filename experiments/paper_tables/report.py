"""The paper tables' RESULTS.md, FID-vs-K plot and sample grids, from results.csv's rows.

Written by experiments/paper_tables/run.py after every part; cells not run yet show "-". The
reading of the numbers is hand-written in reading.md beside RESULTS.md (the output folder) and
included verbatim.
"""

from __future__ import annotations

import os

import numpy as np

from ddss_jax.data.mnist import SPLIT_SIZES
from ddss_jax.settings import SELECT_RULES
from ddss_jax.util import files, plots
from experiments.lib.protocol import (
  ALL_LEARNED_STEPS,
  GRID_STEPS,
  HEADLINE,
  OFF,
  PARTS,
  TABLE_STEPS,
  describe,
)
from experiments.lib.table import BASELINES, SOLVERS, best_fixed, index_rows, label
from experiments.lib.verdicts import seed_check

# CIFAR-10, docs/paper_results.md, section 4
PAPER_RATIO = {5: 0.42, 10: 0.60, 15: 0.66, 20: 0.63, 25: 0.65}
FIG_DIR = "figures"


def grid_file(sampler: str, loss: str, num_steps: int) -> str:
  return f"{sampler.replace(':', '_')}_{loss}_K{num_steps}.npy"


def _series(rows):
  """[(sampler, loss)] in results.csv's order."""
  seen = []
  for r in rows:
    if (r["sampler"], r["loss"]) not in seen:
      seen.append((r["sampler"], r["loss"]))
  return seen


def _table(rows, steps, cell) -> list[str]:
  index = index_rows(rows)
  lines = ["| sampler | " + " | ".join(f"K={k}" for k in steps) + " |",
           "|---" * (len(steps) + 1) + "|"]
  for sampler, loss in _series(rows):
    cells = [cell(index[(sampler, loss, k)]) if (sampler, loss, k) in index else "-"
             for k in steps]
    if any(c != "-" for c in cells):
      lines.append(f"| {label(sampler, loss)} | " + " | ".join(cells) + " |")
  return lines


def comparisons(rows, steps) -> list[str]:
  """The paper's ratio and the issue's targets, per K, as table lines."""
  index = index_rows(rows)
  lines = ["| K | learned FID | best DDPM/DDIM (FID) | ratio | paper ratio (CIFAR-10) "
           "| best solver at K | best solver at 2K | precision / recall: learned vs DDIM "
           "quadratic | learned FID, seed 1 / 2 | best DDPM/DDIM FID, seed 1 / 2 | seed "
           "difference | beats best DDPM/DDIM by more than it |", "|---" * 12 + "|"]
  for k in steps:
    learned = index.get((*HEADLINE, k))
    if learned is None:
      continue
    fixed, solver, solver_2k = (best_fixed(rows, k, BASELINES), best_fixed(rows, k, SOLVERS),
                                best_fixed(rows, 2 * k, SOLVERS))
    fmt = lambda r: f"{r['fid']:.3f} ({r['sampler']})" if r else "-"
    ratio = f"{learned['fid'] / fixed['fid']:.2f}" if fixed else "-"
    paper = f"{PAPER_RATIO[k]:.2f}" if k in PAPER_RATIO else "-"
    ddim = index.get(("ddim:quadratic", "none", k))
    pr = (f"{learned['precision']:.3f} / {learned['recall']:.3f} vs "
          f"{ddim['precision']:.3f} / {ddim['recall']:.3f}") if ddim else "-"
    both, spread, verdict = seed_check(learned, fixed)
    fixed_both = "-" if fixed is None else (
        f"{fixed['fid']:.3f} / " + ("-" if fixed.get("fid_2") is None
                                    else f"{fixed['fid_2']:.3f}"))
    lines.append(f"| {k} | {learned['fid']:.3f} | {fmt(fixed)} | {ratio} | "
                 f"{paper} | {fmt(solver)} | {fmt(solver_2k)} | {pr} | {both} | {fixed_both} | "
                 f"{spread} | {verdict} |")
  return lines


def rerun_table(rows, other) -> tuple[list[str], str]:
  """This run's rows against another results.csv's: (table lines, summary sentence).

  The KID change is measured in the other file's stated std (over subsets) and in the std of a
  difference of two independent estimates, sqrt(std here^2 + std there^2).
  """
  there = index_rows(other)
  lines = ["| sampler | K | FID here | FID there | FID change | KID here +- std | KID there +- "
           "std | KID change / std there | KID change / std of the difference |",
           "|---" * 9 + "|"]
  stated, paired, fid_change = [], [], []
  ratio = lambda change, std: change / std if std > 0 else float(change > 0) * np.inf
  for r in rows:
    o = there.get((r["sampler"], r["loss"], r["num_steps"]))
    if o is None:
      continue
    change = abs(r["kid"] - o["kid"])
    stated.append(ratio(change, o["kid_std"]))
    paired.append(ratio(change, float(np.hypot(r["kid_std"], o["kid_std"]))))
    fid_change.append(r["fid"] / o["fid"] - 1.0)
    lines.append(f"| {label(r['sampler'], r['loss'])} | {r['num_steps']} | {r['fid']:.3f} | "
                 f"{o['fid']:.3f} | {fid_change[-1]:+.1%} | {r['kid']:.4f} +- "
                 f"{r['kid_std']:.4f} | {o['kid']:.4f} +- {o['kid_std']:.4f} | "
                 f"{stated[-1]:.2f} | {paired[-1]:.2f} |")
  if not stated:
    return [], "No row of this run is in the compared file."
  stated, paired, fid_change = np.array(stated), np.array(paired), np.array(fid_change)
  direction = np.sign(np.median(fid_change))
  summary = (f"{len(stated)} rows in both. The KID change is within the stated std (there) for "
             f"{(stated <= 1).sum()}, within twice it for {(stated <= 2).sum()} (largest "
             f"{stated.max():.2f}); in the std of the difference of two independent estimates, "
             f"within one for {(paired <= 1).sum()}, within two for {(paired <= 2).sum()} "
             f"(largest {paired.max():.2f}). The FID changes by {np.median(fid_change):+.1%} in "
             f"the median (in that direction for {(np.sign(fid_change) == direction).sum()} "
             f"rows) and by {np.abs(fid_change).max():.1%} at most.")
  return lines, summary


def plot_fid(rows, path: str) -> None:
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel  (Agg via plots)
  fig, ax = plt.subplots(figsize=(8.5, 5.5))
  series = _series(rows)
  colours = plt.cm.tab20(np.linspace(0.0, 1.0, max(len(series), 2)))
  for colour, (sampler, loss) in zip(colours, series):
    points = sorted((r["num_steps"], r["fid"]) for r in rows
                    if (r["sampler"], r["loss"]) == (sampler, loss))
    style = "-" if loss != "none" else "--"
    ax.plot(*zip(*points), style, marker="o", ms=3, color=colour, label=label(sampler, loss))
  ax.set_xlabel("K (model calls)")
  ax.set_ylabel("FID (MNIST classifier features, 1000 held-out digits)")
  ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  plots.save(fig, path, dpi=110)


def plot_grids(rows, workdir: str, num_steps: int, path: str) -> bool:
  """One grid per sampler at num_steps, 4 to a row; False if none was kept."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  panels = []
  for sampler, loss in _series(rows):
    file = os.path.join(workdir, "grids", grid_file(sampler, loss, num_steps))
    if os.path.exists(file):
      grid = np.load(file, allow_pickle=False)
      panels.append((label(sampler, loss), grid.astype(np.float32) / 127.5 - 1.0))
  if not panels:
    return False
  cols = 4
  rows_ = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows_, cols, figsize=(3.3 * cols, 3.5 * rows_), squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, (title, images) in zip(axes.flat, panels):
    ax.imshow(plots.grid(images), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=8)
  fig.suptitle(f"K = {num_steps}: the first {len(panels[0][1])} evaluation samples, same noise")
  fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.98))
  plots.save(fig, path, dpi=72)
  from PIL import Image  # pylint: disable=import-outside-toplevel  (matplotlib depends on it)
  grey = Image.open(path).convert("L")  # grey pictures: a quarter the bytes
  with files.atomic_write(path, "wb") as f:
    grey.save(f, format="PNG", optimize=True)
  return True


def draw_figures(out: str, workdir: str, rows: list[dict]) -> None:
  """out/figures/: the FID-vs-K plot, and the sample grids of the rows whose grids the workdir
  holds."""
  os.makedirs(os.path.join(out, FIG_DIR), exist_ok=True)
  if rows:
    plot_fid(rows, os.path.join(out, FIG_DIR, "fid_vs_k.png"))
  for k in GRID_STEPS:
    plot_grids(rows, workdir, k, os.path.join(out, FIG_DIR, f"samples_k{k}.png"))


def render(out: str, workdir: str, rows: list[dict], parts: dict, **kwargs) -> str:
  """Draws the figures, then writes out/RESULTS.md (markdown's); returns it."""
  draw_figures(out, workdir, rows)
  text = markdown(out, rows, parts, **kwargs)
  files.write_text(os.path.join(out, "RESULTS.md"), text)
  return text


def markdown(out: str, rows: list[dict], parts: dict, *, seeds: tuple[int, ...] = (0, 1234),
             protocol: dict | None = None, levers: dict | None = None,
             validation_size: int = 500, compare=None) -> str:
  """RESULTS.md of the rows, the parts' times, the figures in out/figures/ and the reading in
  out/reading.md.

  Args:
    seeds: (training seed, evaluation seed[, second evaluation seed]) of the rows.
    protocol: the learned rows' config overrides on configs/mnist.py
      (experiments.lib.protocol.PROTOCOL).
    levers: the learned rows' lever fields (experiments.lib.protocol.ON's) after them; None: all
      off.
    validation_size: the digits carved from the 4000 training digits where the levers validate
      or select (the learned config's train.validation_size).
    compare: None, or (path, rows) of another results.csv to set the rows against.
  """
  second = (f" and {seeds[2]} for the second seed's columns (results.csv's fid_2, kid_2; "
            f"\"seed 2\" below)" if len(seeds) > 2 else "")
  levers = OFF if levers is None else levers
  selects = levers.get("sampler.start") in SELECT_RULES
  if selects:
    which = ("without noise " if levers["sampler.start"] == "select_noise_free" else "")
    start = (f"every learned sampler starts from the fixed sampler {which}it represents with the "
             f"lowest FID on the {validation_size}-digit validation split: docs/method.md, "
             "section 7")
  else:
    start = ("every learned sampler starts from the quadratic stride: GGDM families as DDIM "
             "there, the learned-time solvers as their solver")
  carved = levers.get("train.validate_every_steps") or selects
  train = SPLIT_SIZES["train"]
  digits = (f"the {train - validation_size} training digits a {validation_size}-digit validation "
            "split leaves" if carved else f"the {train} training digits")
  kept = (" Each learned sampler is in `samplers/` beside this file; `python -m "
          "experiments.lib.records --samplers=<file>` reproduces its row."
          if os.path.isdir(os.path.join(out, "samplers")) else "")
  table_steps = list(TABLE_STEPS)
  all_steps = sorted({r["num_steps"] for r in rows if r["num_steps"] <= 2 * max(table_steps)}
                     | set(table_steps))
  references = [r for r in rows if r["num_steps"] > 2 * max(table_steps)]
  md = ["# Paper tables on the embedded MNIST default", "",
        "Generated by `python -m experiments.paper_tables.run` (do not edit; the reading below "
        "is `reading.md` beside this file). Rows: `results.csv` beside this file.", "",
        "Protocol: the shipped MNIST UNet (linear schedule, T = 1000) is the frozen model. Every "
        f"learned sampler is optimised by DDSS on {digits} (Adam, learning rate 5e-3, batch 64, "
        f"the step count in the parts table; {start}), then every "
        f"sampler draws 1000 fresh samples (evaluation seed {seeds[1]}{second}, training seed "
        f"{seeds[0]}; the evaluation noise is never used in optimisation; the "
        "same starting noise for all samplers) that are compared with the 1000 held-out digits "
        "in the shipped MNIST classifier's 96-d feature space: FID, KID (mean and std over 100 "
        "subsets of 500), k-NN precision and recall (k = 3). The teacher loss matches a 200-step "
        "DDIM (linear stride) from the same x_T, over a cached pool of 1024 pairs. DDSS protocol "
        "of the learned rows (experiments/lib/protocol.py's PROTOCOL, overrides on "
        f"configs/mnist.py): {describe(protocol or {})}; the optimisation's levers then: "
        f"{describe(levers)}. Every learned sampler runs at K = "
        f"{' and '.join(map(str, ALL_LEARNED_STEPS))}; at the other K, GGDM +PRED +TIME with the "
        "KID loss alone." + kept, "",
        "## Parts", "", "Wall time summed over the invocations of a part (a killed invocation "
        "loses only its unfinished row's time).", "",
        "| part | wall time | invocations (commit, backend, device, CPUs, DDSS steps, samples, "
        "--seed: rows done) |", "|---|---|---|"]
  for part in PARTS[:-1]:
    if part in parts:
      runs = "; ".join(f"{r['commit']} {r['backend']} {r['device']} {r['cpus']} CPUs, "
                       f"{r['train_steps']} steps, {r['num_samples']} samples, seed "
                       f"{r.get('seed', 0)}"
                       + (f", protocol {describe(r['protocol'])}" if r.get("protocol") else "")
                       + f": {r['rows']} rows "
                       f"in {r['seconds']:.0f} s" for r in parts[part]["runs"])
      md.append(f"| {part} | {parts[part]['seconds'] / 60:.1f} min | {runs} |")
    else:
      md.append(f"| {part} | not run yet | - |")
  md += ["", "## FID (lower is better)", ""]
  md += _table(rows, all_steps, lambda r: f"{r['fid']:.3f}")
  for r in references:  # the teacher
    md += ["", f"Reference: {label(r['sampler'], r['loss'])} with K = {r['num_steps']} (the "
           f"teacher of the teacher loss): FID {r['fid']:.3f}, KID {r['kid']:.4f} +- "
           f"{r['kid_std']:.4f}, precision / recall {r['precision']:.3f} / {r['recall']:.3f}."]
  md += ["", "## KID (mean +- std over subsets)", ""]
  md += _table(rows, table_steps, lambda r: f"{r['kid']:.4f} +- {r['kid_std']:.4f}")
  md += ["", "## Precision / recall (k-NN, k = 3)", ""]
  md += _table(rows, table_steps, lambda r: f"{r['precision']:.3f} / {r['recall']:.3f}")
  md += ["", "## GGDM +PRED +TIME (KID loss) against the baselines", "",
         "Ratio = learned FID / best DDPM-or-DDIM FID at the same K (the paper's comparison). "
         "\"Best solver\" is the lowest-FID of DPM-Solver++(2M), UniPC and iPNDM over the three "
         "step choices (time-uniform, logSNR-uniform, quadratic). Seed 1 / 2: the FID on the two "
         "evaluation seeds; the seed difference is the larger change between them of the "
         "learned and the best DDPM/DDIM row, and the learned sampler beats that row by more "
         "than it when its FID is lower by more than that on both seeds (\"-\": rows of one "
         "seed).",
         ""]
  md += comparisons(rows, table_steps)
  if rows and os.path.exists(os.path.join(out, FIG_DIR, "fid_vs_k.png")):
    md += ["", "## FID against K", "", f"![FID against K]({FIG_DIR}/fid_vs_k.png)"]
  for k in GRID_STEPS:
    name = f"samples_k{k}.png"
    if os.path.exists(os.path.join(out, FIG_DIR, name)):
      md += ["", f"## Samples at K = {k}", "", f"![samples at K = {k}]({FIG_DIR}/{name})"]
  if compare is not None:
    lines, summary = rerun_table(rows, compare[1])
    md += ["", f"## Against {compare[0]}", "", summary, ""] + lines
  reading = os.path.join(out, "reading.md")
  if os.path.exists(reading):
    md += ["", open(reading, encoding="utf-8").read().strip()]
  return "\n".join(md) + "\n"
