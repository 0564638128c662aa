"""Renders BENCHMARKS.md from benchmarks/results/<backend>.json (written by benchmarks/suite.py).

  python -m benchmarks.report [--results_dir=benchmarks/results] [--out=BENCHMARKS.md]
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable

from absl import app, flags

from ddss_jax.util import files

# Peak dense FLOP/s of known accelerators (NVIDIA datasheets, SXM parts): (float32 on CUDA
# cores, TF32 on tensor cores). XLA runs float32 convolutions and matmuls on GPUs at its default
# precision, which allows TF32.
PEAK_TFLOPS = {"H100": (67.0, 494.7), "H200": (67.0, 494.7), "A100": (19.5, 156.0)}
X = r"\|x\|"  # a literal |x| inside a Markdown table cell


def load(results_dir: str) -> list[dict[str, Any]]:
  """Every results file, CPU first."""
  runs = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path, encoding="utf-8") as f:
      runs.append(json.load(f))
  return sorted(runs, key=lambda r: r["machine"]["backend"] != "cpu")


def load_file(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def merge(earlier: dict[str, Any] | None, results: dict[str, Any]) -> dict[str, Any]:
  """A results file from an earlier run's and this run's sections: this run's replace the
  earlier ones of the same name; every section keeps the commit and date it was measured at
  ("measured_at"), and "machine" is the latest run's."""
  stamp = {k: results["machine"][k] for k in ("commit", "date")}
  done = list(results["section_seconds"])
  if earlier is None:
    return {**results, "measured_at": {name: stamp for name in done}}
  measured = dict(earlier.get("measured_at") or {
      name: {k: earlier["machine"][k] for k in ("commit", "date")}
      for name in earlier.get("section_seconds", {})})
  merged = {**earlier, **{k: v for k, v in results.items() if k in done}}
  merged["machine"] = results["machine"]
  merged["section_seconds"] = {**earlier.get("section_seconds", {}), **results["section_seconds"]}
  merged["measured_at"] = {**measured, **{name: stamp for name in done}}
  return merged


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
  align = ["---" if n == 0 else "---:" for n in range(len(header))]
  return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
          *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _fmt(value: float | None, spec: str = ".2f") -> str:
  return "-" if value is None else format(value, spec)


def _met(ok: bool) -> str:
  return "met" if ok else "**not met**"


def _peak(machine: dict[str, Any]) -> tuple[float, float] | None:
  return next((peak for name, peak in PEAK_TFLOPS.items() if name in machine["device_kind"]),
              None)


def targets(run: dict[str, Any]) -> list[str]:
  """One row per target: what was measured, the goal, whether it is met."""
  rows = []
  gradient = [r for r in run.get("gradient", []) if r["design"] == "loop"]
  if gradient:
    ratios = ", ".join(f"{r['ratio']:.2f} (K={r['k']})" for r in gradient)
    rows.append(["DDSS step / K-step sampling", ratios, "<= 4",
                 _met(all(r["ratio"] <= 4 for r in gradient))])
  memory = [r for r in run.get("memory", []) if r["gradient"] == "adjoint"]
  if len(memory) > 1:
    worst = max(r["per_step_previous"] for r in memory if r["per_step_previous"] is not None)
    rows.append([f"temp memory per extra step, K={memory[0]['k']}..{memory[-1]['k']}",
                 f"at most {worst:.2f} {X}", f"<= 8 {X}", _met(worst <= 8)])
    last = memory[-1]
    rows.append([f"compile time K={last['k']} / K={memory[0]['k']}",
                 f"{last['compile_ratio']:.2f}", "<= 1.5", _met(last["compile_ratio"] <= 1.5)])
  if "compile" in run:
    c = run["compile"]
    rows.append([f"compilations of the train step over {c['train_steps']} steps",
                 str(c["step_compiles"]), "1", _met(c["step_compiles"] == 1)])
  for r in run.get("overhead", []):
    rows.append([f"{r['family']} K={r['k']} sampling / (K x one model call)",
                 f"{r['ratio']:.3f}", "<= 1.05", _met(r["ratio"] <= 1.05)])
  d = run.get("diffusers")
  if d and "skipped" not in d:
    rows.append([f"DDIM K={d['k']} images/s, ddss_jax / diffusers ({d['torch_device']})",
                 f"{d['ratio']:.2f}", ">= 1.0", _met(d["ratio"] >= 1.0)])
  for r in run.get("features", []):
    rows.append([f"feature network + KID share of the DDSS step, K={r['k']}",
                 f"{100 * r['share']:.1f}%", "(reported)", "-"])
  guidance = run.get("guidance", [])
  if guidance:
    rows.append(["guided DDSS step / unconditional DDSS step",
                 ", ".join(f"{r['ratio']:.2f} (K={r['k']})" for r in guidance), "<= 2.2",
                 _met(all(r["ratio"] <= 2.2 for r in guidance))])
  return _table(["target", "measured", "goal", "status"], rows)


def gradient_section(run: dict[str, Any]) -> list[str]:
  cfg, peak = run["config"], _peak(run["machine"])
  header = ["design", "K", "DDSS step s", "sampling s", "step / sampling", "compile s",
            "temp MB", "convolutions (not canonical)"]
  if peak:
    header += ["step images/s", "step TFLOP/s", "share of FP32 / TF32 peak"]
  rows = []
  for r in run["gradient"]:
    row = [r["design"], r["k"], f"{r['step_s']:.3f}", f"{r['sample_s']:.3f}",
           f"{r['ratio']:.2f}", f"{r['compile_s']:.1f}", f"{r['temp_mb']:.0f}",
           (f"{r['convolutions']} ({r['noncanonical_convolutions']})" if r["convolutions"]
            else "- (library calls)")]
    if peak:
      tflops = (r["step_flops"] or 0) / r["step_s"] / 1e12
      row += [f"{cfg['batch'] / r['step_s']:.0f}", f"{tflops:.2f}",
              f"{100 * tflops / peak[0]:.1f}% / {100 * tflops / peak[1]:.1f}%"]
    rows.append(row)
  return [
      f"DDSS step = sampling ({cfg['family']}, {cfg['stride']} stride) + classifier features of "
      f"the generated and the real batch + KID + the gradient into the sampler parameters, batch "
      f"{cfg['batch']}; sampling = the K-step sampler alone. Designs: `loop` (the default: one "
      "compiled loop, convolutions in canonical order, `ddss_jax/samplers/conv_layout.py`), "
      "`loop_as_traced` "
      "(the same loop, convolutions as JAX traced them: `samplers.make(..., canonical_convs="
      "False)`), `unrolled` (K copies of the step in straight-line code, "
      "`config.sampler.unroll = K`).", "",
      *_table(header, rows)]


def memory_section(run: dict[str, Any]) -> list[str]:
  rows = [[r["gradient"], r["k"], f"{r['temp'] / 2**20:.1f}", _fmt(r["per_step_first"]),
           _fmt(r["per_step_previous"]), f"{r['compile_s']:.1f}", f"{r['compile_ratio']:.2f}"]
          for r in run["memory"]]
  return [
      f"XLA temp memory of the compiled DDSS step (default design), |x| = "
      f"{run['config']['image_bytes'] / 2**20:.2f} MB (one batch of images). `adjoint` is the "
      "default reverse pass (keeps the K + 1 states); `checkpoint` is autodiff of a scan of "
      "`jax.checkpoint`-ed steps that carries the history (O(K^2 |x|)).", "",
      *_table(["gradient", "K", "temp MB", f"per extra step vs first K ({X})",
               f"per extra step vs previous K ({X})", "compile s", "compile / first K"], rows)]


def other_sections(run: dict[str, Any]) -> list[str]:
  lines = []
  if "compile" in run:
    c = run["compile"]
    lines += ["### Recompilation", "",
              f"{c['train_steps']} optimisation steps of `train.make_train_step` (K={c['k']}, "
              f"state donated and replaced each step, a fresh real batch each step): the step "
              f"compiled {c['step_compiles']} time(s); XLA compiled {c['all_compiles']} programs "
              "in all (the others are small helpers: the state's copy, the real batches).", ""]
  if "overhead" in run:
    rows = [[r["family"], r["k"], f"{r['sample_s']:.4f}", f"{r['call_s']:.4f}",
             f"{r['ratio']:.3f}", f"{r['bare_loop_s']:.4f}", f"{r['ratio_bare_loop']:.3f}"]
            for r in run["overhead"]]
    lines += ["### Sampler overhead", "",
              "K-step sampling (jitted, batch as above) against K times one jitted model call "
              "at the same batch (the target), and against one compiled loop of K bare model "
              "calls (what is left is the sampler's own arithmetic and noise):", "",
              *_table(["family", "K", "sampling s", "one model call s", "sampling / (K x call)",
                       "loop of K calls s", "sampling / loop"], rows), ""]
  d = run.get("diffusers")
  if d:
    lines += ["### Against diffusers (PyTorch) on the same weights", ""]
    if "skipped" in d:
      lines += [f"Skipped: {d['skipped']}.", ""]
    else:
      lines += [f"The shipped MNIST UNet exported with `diffusers_io.save`, DDIM K={d['k']} "
                f"(linear stride, eta = 0), batch {d['batch']}, {d['threads']} threads, torch "
                f"{d['torch_version']} on {d['torch_device']}. The two samples differ by at most "
                f"{d['max_abs_diff']:.1e} (same starting noise).", "",
                *_table(["", "images/s"],
                        [["ddss_jax", f"{d['jax_images_per_s']:.1f}"],
                         ["diffusers DDIMScheduler + UNet2DModel",
                          f"{d['torch_images_per_s']:.1f}"],
                         ["ratio", f"{d['ratio']:.2f}"]]), ""]
  if run.get("guidance"):
    rows = [[r["k"], f"{r['step_s']:.3f}", f"{r['guided_step_s']:.3f}", f"{r['ratio']:.2f}",
             f"{r['guided_compile_s']:.1f}"] for r in run["guidance"]]
    lines += ["### Classifier-free guidance", "",
              "The DDSS step of ggdm+pred+time with learned guidance weights on a "
              "class-conditional UNet (the shipped weights plus an 11-row class embedding; "
              "eps_u and eps_c in one call on 2B) against the unconditional step, same batch "
              "and K:", "",
              *_table(["K", "unconditional step s", "guided step s", "ratio",
                       "guided compile s"], rows), ""]
  if run.get("features"):
    rows = [[r["k"], f"{r['features_s']:.3f}", f"{r['step_s']:.3f}", f"{100 * r['share']:.1f}%"]
            for r in run["features"]]
    lines += ["### Feature network and KID", "",
              "Classifier features of both batches, KID and their backward pass (timed alone) "
              "against the whole DDSS step:", "",
              *_table(["K", "features + KID s", "DDSS step s", "share"], rows), ""]
  return lines


def _measured_at(run: dict[str, Any]) -> list[str]:
  """A line naming the sections measured at another commit than the header's, if any."""
  m = run["machine"]
  other = {name: at for name, at in (run.get("measured_at") or {}).items()
           if at["commit"] != m["commit"]}
  if not other:
    return []
  return ["", "Measured in earlier runs: " + "; ".join(
      f"{name} at commit {at['commit']}, {at['date']}" for name, at in other.items()) + "."]


def render(runs: list[dict[str, Any]]) -> str:
  lines = ["# Benchmarks", "",
           "Written by `python -m benchmarks.suite` (rendered by `benchmarks/report.py` from "
           "`benchmarks/results/<backend>.json`, where every number below is stored). Each "
           "ratio is two programs timed side by side in one process (median of the timed calls "
           "after a warm-up call). Where the time goes: `python -m benchmarks.profile "
           "--what=step` (or `--what=sample`) prints XLA:CPU's per-operation times from a "
           "jax.profiler trace, grouped by phase (forward / reverse), UNet block and kind "
           "(convolution, dot, other); docs/performance.md explains with it each target "
           "not met.", ""]
  sections: list[tuple[str, Callable]] = [("gradient", gradient_section),
                                          ("memory", memory_section)]
  for run in runs:
    m = run["machine"]
    where = (f"{m['device_count']} x {m['device_kind']}" if m["backend"] != "cpu"
             else f"{m['cpu']}, {m['cpu_count']} cores")
    lines += [f"## {m['backend'].upper()}: {where}", "",
              f"jax {m['jax']}, Python {m['python']}, commit {m['commit']}, {m['date']}; "
              "sections took "
              f"{', '.join(f'{k} {v:.0f} s' for k, v in run['section_seconds'].items())}.",
              *_measured_at(run),
              "", "### Targets", "", *targets(run), ""]
    for name, fn in sections:
      if run.get(name):
        lines += [f"### {'Gradient cost' if name == 'gradient' else 'Memory and compile time'}",
                  "", *fn(run), ""]
    lines += other_sections(run)
  return "\n".join(lines).rstrip() + "\n"


def write(results_dir: str, out: str) -> None:
  files.write_text(out, render(load(results_dir)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  write(flags.FLAGS.results_dir, flags.FLAGS.out)


if __name__ == "__main__":
  # Defined here, not at import: benchmarks/suite.py imports this module and has the same flags.
  flags.DEFINE_string("results_dir", "benchmarks/results", "Where the <backend>.json files are.")
  flags.DEFINE_string("out", "BENCHMARKS.md", "The Markdown report.")
  app.run(main)
