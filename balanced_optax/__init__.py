"""balanced_optax: Adam with beta1 = beta2, as composable optax transforms.

Gradients flow one way: an estimator of the gradient's mean and variance
(:func:`tied_moments` or :func:`variance_ema`), a direction rule
(:func:`snr_sign_step`), then a learning rate. :func:`scale_by_balanced_adam`
is the same computation fused into one pass; :func:`balanced_adam` and
:func:`balanced_adamw` are the ready-made optimizers.
"""

from balanced_optax.adam import ScaleSafeAdamState, scale_by_balanced_adam
from balanced_optax.alias import balanced_adam, balanced_adamw
from balanced_optax.direction import snr_sign_step
from balanced_optax.moments import (
  GradientMoments,
  VarianceEmaState,
  tied_moments,
  variance_ema,
)

__version__ = "0.1.0"

__all__ = (
  "GradientMoments",
  "ScaleSafeAdamState",
  "VarianceEmaState",
  "balanced_adam",
  "balanced_adamw",
  "scale_by_balanced_adam",
  "snr_sign_step",
  "tied_moments",
  "variance_ema",
)
