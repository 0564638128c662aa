"""The learning: a problem (problem), the losses (kid_loss, teacher), the optimisation loop and its
checkpoints (loop), scores on the validation split (validation), the selection policies (select)
and the learn call that puts them together (ddss)."""
