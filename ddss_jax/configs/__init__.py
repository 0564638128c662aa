"""The shipped configs as the package ddss_jax.configs, so that a config file anywhere can derive
from them (`from ddss_jax.configs import cifar10`).

Their files are the repository's top-level configs/ folder: an installed package gets them there
(setup.py's package_dir); from a source checkout, this package's path is that folder.
"""

import os

_SOURCE_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")
if os.path.isfile(os.path.join(_SOURCE_CONFIGS, "default.py")):
  __path__ = [_SOURCE_CONFIGS]  # pylint: disable=invalid-name
