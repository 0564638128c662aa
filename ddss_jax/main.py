"""Entry point: python -m ddss_jax.main --config=configs/<name>.py [--workdir=DIR] [--mode=...].

--config takes a config file's path (anywhere; it may derive from the shipped ones with `from
ddss_jax.configs import cifar10`) or a shipped config's name (--config=cifar10); --config.x.y=V
overrides a field. --workdir defaults to runs/<config name> in the current directory.
--mode=train (the default) learns a sampler and evaluates it against the baseline; --mode=evaluate
re-evaluates the sampler a training run saved in DIR (e.g. on 50000 samples instead of a few).

Many hosts: start the same command on every host with --distributed (a TPU pod slice, or a GPU
cluster whose launcher JAX recognises, e.g. SLURM or Open MPI, finds the others itself), or with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I where it does not. The batch
sizes in the config are global; every device of every process takes an equal share.
"""

import os
import re

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ddss_jax import configs as shipped_configs, run as run_lib
from ddss_jax.util import logs
from ddss_jax.util.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A config file's path (configs/*.py, or your own) "
                                "or a shipped config's name (cifar10, mnist, ...).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures (default: "
                    "runs/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                  "train: DDSS, then evaluation; evaluate: evaluate workdir/sampler.json.")
flags.DEFINE_bool("allow_config_change", False, "Resume a workdir whose run had another config "
                  "(family, K, model, ...); by default that is refused.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed "
                    "where JAX cannot find it from the environment.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
flags.mark_flags_as_required(["config"])
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def shipped_config_names() -> list[str]:
  """The configs shipped in configs/ (installed as ddss_jax.configs), by name."""
  folder = shipped_configs.__path__[0]
  return sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")


def config_path(value: str) -> str:
  """--config's value with a shipped config's name ("cifar10") replaced by its file's path; a
  path (or any file that exists) is kept. Raises flags.IllegalFlagValueError for a bare name that
  is neither a file here nor a shipped config, listing the shipped ones."""
  name, colon, argument = value.partition(":")  # config_flags' "file.py:argument" form
  if os.path.isfile(name) or not _NAME.fullmatch(name):
    return value
  if name not in shipped_config_names():
    raise flags.IllegalFlagValueError(
        f"--config={value}: no file {name!r} here and no shipped config of that name; shipped "
        f"configs: {shipped_config_names()} (or give a path)")
  return os.path.join(shipped_configs.__path__[0], f"{name}.py") + colon + argument


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with --config=<name> standing for the shipped config of that name."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith(("--config=", "-config=")):
      flag, _, value = arg.partition("=")
      out[i] = f"{flag}={config_path(value)}"
    elif arg in ("--config", "-config") and i + 1 < len(out):
      out[i + 1] = config_path(out[i + 1])
  return FLAGS(out)


def default_workdir() -> str:
  """runs/<config file name without .py>, relative to the current directory."""
  name = os.path.basename(config_flags.get_config_filename(FLAGS["config"])).partition(":")[0]
  return os.path.join("runs", name.removesuffix(".py"))


def initialize_distributed() -> None:
  """jax.distributed.initialize as the flags ask; CPU processes talk through gloo."""
  if not (FLAGS.distributed or FLAGS.coordinator_address):
    return
  # Only the CPU backend reads this: its devices need gloo for cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  workdir = FLAGS.workdir or default_workdir()
  if not FLAGS.workdir:
    print(f"workdir: {workdir} (the default; --workdir=DIR to choose)", flush=True)
  initialize_distributed()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    if FLAGS.mode == "evaluate":
      run_lib.evaluate_workdir(FLAGS.config, workdir)
    else:
      run_lib.train_and_evaluate(FLAGS.config, workdir,
                                 allow_config_change=FLAGS.allow_config_change)
  except (ConfigError, FloatingPointError) as e:  # the message says it all: no traceback
    raise SystemExit(f"ddss_jax: {type(e).__name__}: {e}") from e


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
