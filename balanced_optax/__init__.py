"""balanced_optax: Adam with beta1 = beta2, as composable optax transforms.

Gradients flow one way: an estimator of the gradient's mean and variance
(:func:`tied_moments` or :func:`variance_ema`), a direction rule
(:func:`snr_sign_step`), then a learning rate. :func:`scale_by_balanced_adam`
is the same computation fused into one pass; :func:`balanced_adam` and
:func:`balanced_adamw` are the ready-made optimizers. Beside them: diagnostics
of gradient-scale invariance, rules for choosing beta, and moment statistics
for logging.
"""

from balanced_optax.adam import ScaleSafeAdamState, scale_by_balanced_adam
from balanced_optax.alias import balanced_adam, balanced_adamw
from balanced_optax.beta_rules import (
  BETA_GRID,
  beta_from_half_life,
  beta_from_noise_and_lag,
  beta_from_refresh,
  estimate_effective_horizon,
  half_life,
  in_convergence_region,
  memory_horizon,
  refresh_count,
  scale_beta_for_batch,
  snap_beta,
  tracking_risk,
)
from balanced_optax.diagnostics import (
  first_order_scale_coefficient,
  scale_sensitivity,
  update_norm_stability,
)
from balanced_optax.direction import snr_sign_step
from balanced_optax.lowbit import LowBitAdamState
from balanced_optax.moments import (
  GradientMoments,
  VarianceEmaState,
  tied_moments,
  variance_ema,
)
from balanced_optax.monitoring import moment_statistics, moments_from_state
from balanced_optax.muon import balanced_muon
from balanced_optax.selection import BetaSelection, select_beta

__version__ = "0.1.0"

__all__ = (
  # Estimators, direction, fused path and optimizers.
  "GradientMoments",
  "LowBitAdamState",
  "ScaleSafeAdamState",
  "VarianceEmaState",
  "balanced_adam",
  "balanced_adamw",
  "scale_by_balanced_adam",
  "snr_sign_step",
  "tied_moments",
  "variance_ema",
  # Gradient-scale invariance diagnostics [FH26].
  "first_order_scale_coefficient",
  "scale_sensitivity",
  "update_norm_stability",
  # Choosing beta [FH26b, B23, Z22].
  "BETA_GRID",
  "beta_from_half_life",
  "beta_from_refresh",
  "estimate_effective_horizon",
  "half_life",
  "in_convergence_region",
  "memory_horizon",
  "refresh_count",
  "scale_beta_for_batch",
  "snap_beta",
  # Early memory selection [FH26c].
  "BetaSelection",
  "beta_from_noise_and_lag",
  "select_beta",
  "tracking_risk",
  # Muon on hidden matrices, balanced Adam on the rest.
  "balanced_muon",
  # Moment statistics for logging.
  "moment_statistics",
  "moments_from_state",
)
