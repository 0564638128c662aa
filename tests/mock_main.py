"""`python tests/mock_main.py N ARGS...` runs `python -m ddss_jax.main ARGS...` with
tensorflow-datasets' mock data (N random examples per split, no files, no network): how
tests/test_pretrained.py runs the real-scale configs end to end, each in a fresh process.
"""

import sys

import tensorflow_datasets as tfds
from absl import app

from ddss_jax import main
from ddss_jax.data import tfds_images

if __name__ == "__main__":
  num_examples = int(sys.argv.pop(1))
  # Mock data intercepts reads but leaves no prepared files for the pre-flight check to find.
  tfds_images.missing_data_message = lambda *args, **kwargs: None
  with tfds.testing.mock_data(num_examples=num_examples,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    app.run(main.main)
