"""Converts the FID Inception weights once from PyTorch's .pth to a flax msgpack.

Optional: a run reads the .pth itself (without torch, ddss_jax.models.torch_checkpoint); the
msgpack is smaller to ship and carries its own sha256 sidecar. Run (no torch needed):
  python -m ddss_jax.tools.convert_inception --src pt_inception-2015-12-05-6726825d.pth \
      --dst inception_fid.msgpack

Checks that the .pth's sha256 starts with 6726825d (the prefix in its name; --noverify skips it),
writes the msgpack and `<dst>.sha256` beside it (ddss_jax.models.inception_weights.load_weights
verifies the msgpack against it) and prints the msgpack's sha256. Get the .pth from
ddss_jax.models.inception_weights.WEIGHTS_URL.
"""

from absl import app, flags

from ddss_jax.models import inception_weights

FLAGS = flags.FLAGS
flags.DEFINE_string("src", inception_weights.WEIGHTS_FILENAME, "The pytorch-fid .pth weights file.")
flags.DEFINE_string("dst", "inception_fid.msgpack", "Where to write the msgpack.")
flags.DEFINE_bool("verify", True, "Check the .pth's sha256 prefix (6726825d).")


def main(argv):
  del argv
  variables = inception_weights.load_weights(FLAGS.src, verify=FLAGS.verify)
  digest = inception_weights.save_converted(variables, FLAGS.dst)
  print(f"{FLAGS.dst} sha256 {digest}")


if __name__ == "__main__":
  app.run(main)
