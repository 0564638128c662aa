"""The evaluation: drawing samples in batches (drawing), the metrics (metrics/), and the streamed
held-out evaluation of several samplers side by side (held_out)."""
