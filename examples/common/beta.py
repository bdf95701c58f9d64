"""Balanced Adam's beta for a run: a float, ``"auto"``, ``"refresh"`` or
``"run_length"``.

``beta="auto"`` runs early memory selection [FH26c] before training:
``balanced_optax.select_beta`` trains a short pilot with this run's own
optimizer recipe (schedule, clipping, weight decay; only beta replaced), on
this run's own training batches (steps 0, 1, ... of the step-indexed data
order) from this run's initial parameters, measures the noise and the drift
of the normalized gradient direction, and picks beta from them. Training then
starts from the same initial parameters and step 0, with that beta fixed.
The choice is saved in ``WORKDIR/beta_selection.json`` before the first
checkpoint, so a resumed run reuses it instead of running the pilot again.

``beta="refresh"`` is [FH26b]'s refresh rule with the configured step count
as the horizon, snapped to ``balanced_optax.BETA_GRID``: a prior that needs
no measurement. ``beta="run_length"`` is the same rule with a refresh count
fit on published oracles, ``1 - RUN_LENGTH_REFRESH / num_steps`` clipped to
[FH26c]'s range [0.68377, 0.999] and snapped to BETA_GRID: the rule that the
beta-selection benchmark supports (docs/choosing_beta.md).

Either way the chosen beta is printed and logged as a ``step`` 0 record of
``metrics.jsonl`` (``beta``, and ``beta_selection/*`` or ``beta_refresh/*``).

References:
  [FH26c] Fernandez-Hernandez et al., Early Memory Selection for Balanced
  Adam, 2026. [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory
  of Balanced Adam, arXiv 2605.10119, 2026.
"""

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

import balanced_optax
from examples.common import mesh as mesh_lib
from examples.common import optim
from examples.common.config import (
  PILOT_NUM_GROUPS,
  RUN_LENGTH_RANGE,
  RUN_LENGTH_REFRESH,
  TrainConfig,
  check_beta,
)

SELECTION_FILE = "beta_selection.json"
# The BetaSelection fields that are one number each go to metrics.jsonl too.
_LOGGED_FIELDS = (
  "beta_continuous",
  "noise",
  "change",
  "lag_intercept",
  "lag_slope",
  "horizon",
  "pilot_steps",
  "gradient_evaluations",
  # What the measurement is made of: whether the probe design, not the
  # workload, set the answer (logged as 0/1).
  "noise_share",
  "horizon_ceiling",
  "intercept_clipped",
  "design_limited",
)


def run_pilot(
  config: TrainConfig,
  loss_fn: Callable,
  train_batch: Callable[[int], dict[str, np.ndarray]],
  graphdef: nnx.GraphDef,
  params: Any,
  batch_sharding: jax.sharding.NamedSharding,
):
  """``balanced_optax.select_beta`` on the run's recipe, data and init.

  Args:
    config: the run's config (its ``beta`` is ignored).
    loss_fn: the task's ``(model, batch) -> (loss, aux)``; the pilot
      differentiates it exactly as a training step does.
    train_batch: ``step -> host batch``, the run's data order.
    graphdef: the model's structure.
    params: the initial parameters, placed with the run's shardings.
    batch_sharding: where a batch goes (split over the ``data`` axis).

  Returns:
    The ``balanced_optax.BetaSelection``, without the pilot's final params.
  """

  def make_optimizer(beta: float):
    return optim.make_optimizer(dataclasses.replace(config, beta=beta))[0]

  def grad_fn(params, batch):
    def loss_of_params(p):
      return loss_fn(nnx.merge(graphdef, p), batch)[0]

    return jax.grad(loss_of_params)(params)

  selection = balanced_optax.select_beta(
    make_optimizer,
    grad_fn,
    lambda step: mesh_lib.put_batch(train_batch(step), batch_sharding),
    params,
    pilot_steps=config.pilot_steps,
    lags=tuple(config.pilot_lags),
    num_probes=config.pilot_num_probes,
    num_groups=PILOT_NUM_GROUPS,
    eps=config.eps,
    seed=config.seed,
  )
  return selection._replace(pilot_params=None)  # frees the pilot's params


def run_length_beta(num_steps: int) -> float:
  """``1 - RUN_LENGTH_REFRESH / num_steps`` within [FH26c]'s range
  [0.68377, 0.999], snapped to ``BETA_GRID``."""
  return float(
    balanced_optax.beta_from_refresh(
      t_es=num_steps,
      refresh=RUN_LENGTH_REFRESH,
      grid=balanced_optax.BETA_GRID,
      beta_range=RUN_LENGTH_RANGE,
    )
  )


def resolve(
  config: TrainConfig,
  workdir: str,
  pilot: Callable[[], Any],
  resuming: bool,
) -> tuple[float, dict[str, float]]:
  """The run's beta, and the ``metrics.jsonl`` record that says how it came.

  Args:
    config: the run's config.
    workdir: where ``beta_selection.json`` is kept.
    pilot: runs the pilot (see :func:`run_pilot`); called only for
      ``beta="auto"`` without a saved selection.
    resuming: the run restarts from a checkpoint.

  Returns:
    ``(beta, record)``; the record is ``{}`` for a float beta.

  Raises:
    ValueError: for a bad ``beta``, or an ``"auto"`` run that has
      checkpoints but no saved selection (it was trained with another beta).
  """
  check_beta(config)
  if not isinstance(config.beta, str):
    return float(config.beta), {}
  is_first_process = jax.process_index() == 0
  if config.beta == "refresh":
    beta = float(
      balanced_optax.beta_from_refresh(
        t_es=config.num_steps, grid=balanced_optax.BETA_GRID
      )
    )
    if is_first_process:
      print(
        f"beta = {beta:.5g}, from the refresh rule with T_ES = num_steps ="
        f" {config.num_steps} (snapped to BETA_GRID)"
      )
    return beta, {"beta": beta, "beta_refresh/t_es": config.num_steps}

  if config.beta == "run_length":
    beta = run_length_beta(config.num_steps)
    if is_first_process:
      print(
        f"beta = {beta:.5g}, from the run-length rule 1 - {RUN_LENGTH_REFRESH:.1f}"
        f" / num_steps with num_steps = {config.num_steps} (snapped to BETA_GRID)"
      )
    return beta, {"beta": beta, "beta_run_length/num_steps": config.num_steps}

  path = os.path.join(workdir, SELECTION_FILE)
  if os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
    if is_first_process:
      saved = balanced_optax.BetaSelection(**report).report()
      print(f"beta: reusing the pilot's choice saved in {path} (not re-run): {saved}")
  else:
    if resuming:
      raise ValueError(
        f"beta='auto' but {workdir} has checkpoints and no {SELECTION_FILE}:"
        " it was trained with another beta; use a new workdir"
      )
    selection = pilot()
    report = selection.as_dict()
    if is_first_process:
      os.makedirs(workdir, exist_ok=True)
      with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
      os.replace(path + ".tmp", path)  # atomic: no half-written choice
      print(f"beta: early memory selection chose {selection.report()}")
  record = {"beta": report["beta"]}
  # Through BetaSelection so that a selection saved before a field existed
  # logs its default; fields a selection left unmeasured (None) are not logged.
  fields = balanced_optax.BetaSelection(**report)._asdict()
  record.update(
    {f"beta_selection/{k}": fields[k] for k in _LOGGED_FIELDS if fields[k] is not None}
  )
  # Named like the other wall-clock metrics, which run comparisons leave out.
  record["beta_selection/pilot_seconds"] = report["seconds"]
  return float(report["beta"]), record
