"""The shipped configs: `python -m ddss_jax.main --config=configs/<name>.py` (or `--config=<name>`)
from the repository root; installed as the package ddss_jax.configs, so that a config file
anywhere can derive from them: `from ddss_jax.configs import cifar10`."""
