"""The benchmark suite: every performance target of the project as a ratio measured side by side
in one run, written to BENCHMARKS.md.

  python -m benchmarks.suite            # about 15 minutes on 2 CPU cores; under 10 on a GPU host

runs on whatever backend JAX finds, stores that backend's results in
benchmarks/results/<backend>.json and rewrites BENCHMARKS.md from every results file there
(so a GPU host adds its section without touching the CPU one). Sections (--sections):
  gradient   DDSS step time / K-step sampling time at K = 5, 10, 20 for three reverse-pass
             designs (target <= 4 for the default)
  memory     XLA temp memory of the DDSS step per extra sampler step, K = 5..40, adjoint vs
             checkpointed scan, in units of one image batch |x| (target <= 8 |x|), and compile
             time at K = 40 over K = 5 (target <= 1.5)
  compile    XLA compilations over several optimisation steps (target: 1, no recompilation)
  overhead   K-step sampling time / (K x one model call) (target <= 1.05)
  diffusers  DDIM K = 10 images/s of ddss_jax over diffusers' DDIMScheduler + UNet2DModel on the
             same exported weights, same batch and threads (target >= 1.0)
  features   feature network + KID (forward and backward) as a share of the DDSS step
  guidance   the guided DDSS step (class-conditional UNet, one model call on 2B, learned
             weights) over the unconditional one at K = 5, 10 (target <= 2.2)
A run of some sections keeps the other sections of <backend>.json, each with the commit and date
it was measured at. On a GPU host each timing also gets images/s and the share of the chip's
peak FLOP/s.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from typing import Any, Callable

import jax
from absl import app, flags

from benchmarks import costs, report, vs_diffusers
from ddss_jax.util import files, logs

FLAGS = flags.FLAGS
SECTIONS = ("gradient", "memory", "compile", "overhead", "diffusers", "features", "guidance")


def machine() -> dict[str, Any]:
  device = jax.devices()[0]
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return dict(backend=jax.default_backend(), device_kind=device.device_kind,
              device_count=jax.device_count(), cpu=cpu, cpu_count=os.cpu_count(),
              jax=jax.__version__, python=platform.python_version(), commit=logs.code_commit(),
              date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def run(sections: list[str], *, batch: int, num_steps: list[int], designs: list[str],
        memory_steps: list[int], overhead_steps: int, diffusers_steps: int,
        compile_train_steps: int, repeats: int,
        on_section: Callable[[dict[str, Any]], None] = lambda results: None) -> dict[str, Any]:
  """Runs the chosen sections; returns {"machine": ..., "config": ..., <section>: rows}.
  `on_section(results)` is called after each section (main saves what is done so far)."""
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    raise ValueError(f"unknown section(s) {unknown}; valid choices: {list(SECTIONS)}")
  unknown = sorted(set(designs) - set(costs.DESIGNS))
  if unknown:
    raise ValueError(f"unknown design(s) {unknown}; valid choices: {list(costs.DESIGNS)}")
  results: dict[str, Any] = dict(machine=machine(), config=dict(
      batch=batch, num_steps=num_steps, designs=designs, memory_steps=memory_steps,
      overhead_steps=overhead_steps, diffusers_steps=diffusers_steps, repeats=repeats,
      family=costs.FAMILY, stride=costs.STRIDE))
  bench = costs.build(batch)
  results["config"]["image_bytes"] = bench.image_bytes
  timings: dict[str, float] = {}
  results["section_seconds"] = timings
  for section in [s for s in SECTIONS if s in sections]:
    start = time.perf_counter()
    print(f"section {section} ...", flush=True)
    if section == "gradient" or (section == "features" and "gradient" not in results):
      def partial(rows):  # a cut-off run keeps the rows measured so far
        results["gradient"] = rows
        on_section(results)
      results["gradient"] = costs.gradient_cost(
          bench, num_steps, designs if section == "gradient" else ["loop"], repeats, partial)
    if section == "memory":
      results["memory"] = costs.memory(bench, memory_steps, ["adjoint", "checkpoint"])
    elif section == "compile":
      results["compile"] = costs.compile_count(bench, num_steps[0], compile_train_steps)
    elif section == "overhead":
      results["overhead"] = costs.overhead(bench, overhead_steps, ["ddim", costs.FAMILY],
                                           repeats)
    elif section == "diffusers":
      missing = vs_diffusers.missing()
      results["diffusers"] = ({"skipped": missing} if missing else vs_diffusers.compare(
          bench.problem, batch_size=batch, num_steps=diffusers_steps, repeats=2 * repeats + 1))
    elif section == "features":
      results["features"] = costs.feature_share(bench, results["gradient"], repeats)
    elif section == "guidance":
      results["guidance"] = costs.guidance_cost(bench, num_steps[:2], repeats)
    timings[section] = time.perf_counter() - start
    print(f"section {section}: {timings[section]:.0f} s", flush=True)
    on_section(results)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  batch = FLAGS.batch or (256 if jax.default_backend() == "gpu" else 64)
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  path = os.path.join(FLAGS.results_dir, f"{jax.default_backend()}.json")

  earlier = report.load_file(path) if os.path.exists(path) else None

  def save(results):  # after every section, atomically: a cut-off run keeps what it measured
    files.write_json(path, report.merge(earlier, results))
    report.write(FLAGS.results_dir, FLAGS.out)

  run(FLAGS.sections, batch=batch, num_steps=[int(k) for k in FLAGS.num_steps],
      designs=FLAGS.designs, memory_steps=[int(k) for k in FLAGS.memory_steps],
      overhead_steps=FLAGS.overhead_steps, diffusers_steps=FLAGS.diffusers_steps,
      compile_train_steps=FLAGS.compile_train_steps, repeats=FLAGS.repeats, on_section=save)
  print(f"wrote {path} and {FLAGS.out}")


def define_flags() -> None:
  """The command-line flags, defined only when run as a program: the tests import this module
  beside others (ddss_jax.tools.*) that define flags of the same names."""
  flags.DEFINE_list("sections", list(SECTIONS), f"Which sections to run: {list(SECTIONS)}.")
  flags.DEFINE_integer("batch", None, "DDSS and sampling batch (default: 64 on CPU, 256 on GPU).")
  flags.DEFINE_list("num_steps", ["5", "10", "20"], "K of the gradient-cost section.")
  flags.DEFINE_list("designs", list(costs.DESIGNS), "Reverse-pass designs of the gradient section.")
  flags.DEFINE_list("memory_steps", ["5", "10", "20", "40"], "K of the memory section.")
  flags.DEFINE_integer("overhead_steps", 10, "K of the sampler-overhead section.")
  flags.DEFINE_integer("diffusers_steps", 10, "K of the comparison with diffusers.")
  flags.DEFINE_integer("compile_train_steps", 5, "Optimisation steps of the recompilation check.")
  flags.DEFINE_integer("repeats", 3, "Timed calls per program (the median is reported).")
  flags.DEFINE_string("results_dir", "benchmarks/results", "Where <backend>.json is written.")
  flags.DEFINE_string("out", "BENCHMARKS.md", "The Markdown report, rendered from results_dir.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
