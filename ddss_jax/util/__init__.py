"""What every layer uses: atomic files (files), the metric log and progress clock (logs), the
device mesh (parallel), pictures (plots), hub downloads (hub), the errors (errors)."""
