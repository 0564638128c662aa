"""Networks: frozen diffusion models (eps-predictors) and feature networks."""
