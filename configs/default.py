"""The whole config with every default; other configs derive from it and override a few fields.

Every field's default, doc and check are defined once, in ddss_jax/settings.py (the run's groups)
and ddss_jax/problems/<name>.py (each problem's group); `python -m ddss_jax.config` lists them.

Run: python -m ddss_jax.main --config=configs/default.py --workdir=/tmp/ddss
"""

import ml_collections

from ddss_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.default_config()
