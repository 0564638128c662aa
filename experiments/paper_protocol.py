"""What the paper tables run, shared by the runner (paper_tables) and the report (paper_report):
the K of the tables, the fixed and the learned samplers, the parts, the results.csv columns.
"""

TABLE_STEPS = (5, 10, 15, 20, 25)
FIXED_STEPS = TABLE_STEPS + (30, 40, 50)
# The solvers on the quadratic stride too: where the learned-time solvers start. (They refuse
# its repeated times from K = 30 on; those rows are skipped.)
FIXED = (("ddpm", "linear"), ("ddpm", "quadratic"), ("ddim", "linear"), ("ddim", "quadratic"),
         ("dpm-solver++2m", "linear"), ("dpm-solver++2m", "logsnr"),
         ("dpm-solver++2m", "quadratic"), ("unipc", "linear"), ("unipc", "logsnr"),
         ("unipc", "quadratic"))
# (family, loss, initial stride): every learned sampler starts from the quadratic stride, as
# configs/mnist.py (GGDM families as DDIM there, the learned-time solvers as their solver).
LEARNED = (("vars", "kid", "quadratic"), ("ggdm", "kid", "quadratic"),
           ("ggdm+pred", "kid", "quadratic"), ("ggdm+time", "kid", "quadratic"),
           ("ggdm+pred+time", "kid", "quadratic"), ("ggdm+pred+time", "teacher", "quadratic"),
           ("dpm-solver++2m+time", "kid", "quadratic"), ("unipc+time", "kid", "quadratic"))
# The teacher of the teacher loss (ddss_jax.teacher's default), evaluated as a row: its quality
# bounds what matching it can reach.
TEACHER_ROW = ("ddim", "linear", 200)
PARTS = ("fixed",) + tuple(f"k{k}" for k in TABLE_STEPS) + ("report",)
COLUMNS = ("sampler", "num_steps", "loss", "fid", "kid", "kid_std", "precision", "recall")
GRID_STEPS = (5, 10)
GRID_IMAGES = 64
