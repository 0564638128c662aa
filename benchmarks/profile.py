"""Where the time of a DDSS step (or of K-step sampling) goes on XLA:CPU, from a jax.profiler trace.

  python -m benchmarks.profile [--what=step|sample] [--num_steps=5] [--batch=64] [--top=20]

Compiles the program of benchmarks/costs.py (the embedded default: shipped MNIST UNet and
classifier, GGDM+PRED+TIME, default reverse-pass design), runs it twice under jax.profiler with
XLA:CPU's per-operation trace events on, and attributes each compiled operation's time to
(phase, where, kind): phase "forward" or "reverse" (the transpose of the forward, i.e. the
gradient), where = the module path of the operation (UNet block, classifier, KID), kind =
convolution, dot or other (elementwise, reductions, copies). Prints the totals per group and the
top operations. XLA:CPU only (on GPUs use the trace in TensorBoard / Perfetto directly).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile

# XLA:CPU emits a trace event per compiled operation only with this flag, read at start-up.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402  pylint: disable=wrong-import-position
from absl import app, flags  # noqa: E402  pylint: disable=wrong-import-position

from benchmarks import costs  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum("what", "step", ["step", "sample"], "The DDSS step or K-step sampling.")
flags.DEFINE_integer("num_steps", 5, "K.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("top", 20, "How many single operations to list.")
flags.DEFINE_integer("runs", 2, "Traced runs (times are per run).")

_BLOCK = re.compile(r"(down_blocks_\d+|up_blocks_\d+|mid_block|conv_in|conv_out|conv_norm_out|"
                    r"time_embedding|MNISTClassifier|kid)")


def group(op_name: str, hlo_line: str) -> tuple[str, str, str]:
  phase = "reverse" if "transpose(" in op_name else "forward"
  block = _BLOCK.search(op_name)
  where = block.group(1) if block else "sampler / other"
  layer = re.search(r"(attentions_\d+|resnets_\d+|upsamplers_\d+|downsamplers_\d+)", op_name)
  if layer and block and block.group(1).endswith(("blocks_0", "blocks_1", "blocks_2", "block")):
    where += "/" + re.sub(r"_\d+$", "", layer.group(1))
  kind = ("convolution" if " convolution(" in hlo_line or "conv_general_dilated" in op_name
          else "dot" if " dot(" in hlo_line or "dot_general" in op_name else "other")
  return phase, where, kind


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if jax.default_backend() != "cpu":
    raise app.UsageError(f"XLA:CPU only; the backend is {jax.default_backend()!r}")
  bench = costs.build(FLAGS.batch)
  sampler = costs.make_sampler(bench, FLAGS.num_steps)
  args = costs.step_args(bench, sampler)
  if FLAGS.what == "step":
    fn = costs.ddss_step_fn(bench, sampler)
  else:
    fn, args = costs.sample_fn(bench, sampler), (args[0], args[1], args[4])
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(FLAGS.runs):
        jax.block_until_ready(compiled(*args))
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  lines = {}
  for line in compiled.as_text().split("\n"):
    match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if match:
      lines[match.group(1)] = line
  per_op = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event["name"] in lines:
      per_op[event["name"]] += event["dur"] / 1e3 / FLAGS.runs  # ms per run
  groups, total = collections.Counter(), sum(per_op.values())
  named = {}
  for name, ms in per_op.items():
    op_name = re.search(r'op_name="([^"]+)"', lines[name])
    key = group(op_name.group(1) if op_name else "", lines[name])
    groups[key] += ms
    named[name] = key
  print(f"{FLAGS.what}, K={FLAGS.num_steps}, batch {FLAGS.batch}: {total:.0f} ms of compiled "
        f"operations per run\n")
  print("| phase | where | kind | ms | share |\n|---|---|---|---:|---:|")
  for (phase, where, kind), ms in groups.most_common():
    if ms >= 0.005 * total:
      print(f"| {phase} | {where} | {kind} | {ms:.1f} | {100 * ms / total:.1f}% |")
  print(f"\ntop {FLAGS.top} operations (ms per run; loop bodies summed over iterations):")
  for name, ms in per_op.most_common(FLAGS.top):
    shape = lines[name].split(" = ", 1)[1].split(" ", 1)[0]
    print(f"  {ms:7.1f}  {'/'.join(named[name]):45s} {shape}")


if __name__ == "__main__":
  app.run(main)
