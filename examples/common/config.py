"""The fields every trainer shares, and the checks that run before anything else.

Each example's config is a dataclass that extends :class:`TrainConfig` with
its model and data fields; ``configs/default.py`` and ``configs/tiny.py``
return instances from ``get_config()``, the form ``ml_collections``'
``config_flags.DEFINE_config_file`` loads, so that every field can be set on
the command line (``--config.learning_rate=3e-3``). A run is reproducible
from its config alone: the data order, the initialisation, the schedule and
(with ``beta="auto"``) the pilot that picks beta are all functions of it.

``config.validate()`` is the one place where fields are checked: each
example's ``train_and_evaluate`` calls it first, before any model, checkpoint
or file is made, and a bad field raises :class:`ConfigError` naming the field
and its valid range. Each example's config extends it with its own fields.
"""

import dataclasses
import math
import operator
from collections.abc import Sequence
from typing import Any

import balanced_optax
from balanced_optax import _checks

OPTIMIZERS = ("balanced_adam", "adam", "signum", "rmsprop", "sgd")
# Balanced Adam's state_dtype: float moments, or low-bit codes (about 2 and 1
# bytes per parameter for leaves of 4096 elements or more).
STATE_DTYPES = ("float32", "bfloat16", "int8", "int4")
# What ``beta`` may be besides a float in [0, 1).
BETA_RULES = ("auto", "refresh", "run_length")
# The run-length rule beta = 1 - R / num_steps, R = (1 - beta*) T from
# published oracles only (never fit on this package's benchmark): [OG25]'s
# best tied beta is 0.95 at 6,200 steps and 0.975 at 12,400 (R = 310 both),
# R = 120-390 across their sweeps; [FH26b]'s oracles give R = 178-1690. Each
# source's geometric mean of its range, then the geometric mean of the two:
# R = 344.5 (benchmarks/beta_selection.py measures this rule).
RUN_LENGTH_PUBLISHED_R = {"OG25": (120.0, 390.0), "FH26b": (178.0, 1690.0)}
RUN_LENGTH_REFRESH = math.sqrt(
  math.prod(math.sqrt(low * high) for low, high in RUN_LENGTH_PUBLISHED_R.values())
)
# ... clipped to [FH26c]'s range of memories and snapped to BETA_GRID (runs of
# up to 1394 updates get 0.68377, the GPT trainer's 1500 get 0.82217).
RUN_LENGTH_RANGE = (0.68377, 0.999)
# The pilot splits its probe gradients into this many groups for the noise
# estimate (``balanced_optax.select_beta``'s ``num_groups``).
PILOT_NUM_GROUPS = 4
# Seeds reach jax.random.key, which takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
  """A config field outside its valid range; the message names the field."""


def _as_integer(value: Any) -> int | None:
  """``value`` as an int if it is a Python or NumPy integer (not a bool)."""
  if isinstance(value, bool):
    return None
  try:
    return operator.index(value)
  except TypeError:
    return None


def check_integer(field: str, value: Any, low: int, high: int | None = None) -> None:
  """ConfigError unless ``value`` is an integer in ``[low, high]``."""
  number = _as_integer(value)
  if number is None or number < low or (high is not None and number > high):
    expected = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ConfigError(f"config.{field} must be an integer {expected}, got {value!r}")


def check_number(
  field: str,
  value: Any,
  low: float,
  high: float = math.inf,
  *,
  low_open: bool = False,
  high_open: bool = False,
) -> None:
  """ConfigError unless ``value`` is a real scalar in the interval: balanced_optax's
  own check of a scalar hyperparameter (NaN never lies in an interval; an
  infinite end is open), its message naming the field."""
  try:
    _checks.check_interval(
      field, value, low, high, low_open=low_open, high_open=high_open
    )
  except ValueError as error:
    raise ConfigError(f"config.{error}") from None


def check_choice(field: str, value: Any, choices: Sequence[Any]) -> None:
  if value not in choices:
    raise ConfigError(f"config.{field} must be one of {tuple(choices)}, got {value!r}")


def check_type(field: str, value: Any, kind: type) -> None:
  if not isinstance(value, kind):
    raise ConfigError(f"config.{field} must be a {kind.__name__}, got {value!r}")


def check_with_library(field: str, value: Any, argument: str | None = None) -> None:
  """balanced_optax's own check of a ``balanced_adamw`` argument, on a field.

  ``balanced_adamw`` is built with ``argument`` (default: the field's name)
  set to ``value``; the ValueError it raises names that argument, and comes
  back as a ConfigError naming the field.
  """
  argument = argument or field
  try:
    balanced_optax.balanced_adamw(**{"learning_rate": 0.0, argument: value})
  except ValueError as error:
    message = str(error)
    # The library's messages start with the argument's name.
    if message.startswith(f"{argument} "):
      raise ConfigError(f"config.{field}{message[len(argument) :]}") from None
    raise ConfigError(f"config.{field}: {message}") from None


def check_beta(config: "TrainConfig") -> None:
  """``beta``: a float in [0, 1) or a rule of :data:`BETA_RULES` (``"auto"``
  only with balanced Adam: the others ignore beta)."""
  beta = config.beta
  if isinstance(beta, str):
    if beta not in BETA_RULES:
      raise ConfigError(
        f"config.beta must be a float in [0, 1) or one of {BETA_RULES}, got {beta!r}"
      )
    # The closed-form rules cost nothing and, like a float beta, are ignored
    # by the other optimizers; a pilot would train balanced Adam for nothing.
    if beta == "auto" and config.optimizer != "balanced_adam":
      raise ConfigError(
        f"config.beta={beta!r} chooses balanced Adam's memory, but"
        f" config.optimizer={config.optimizer!r} does not use beta: use"
        " optimizer='balanced_adam' or a float beta"
      )
  elif isinstance(beta, bool) or not isinstance(beta, int | float):
    raise ConfigError(
      f"config.beta must be a float in [0, 1) or one of {BETA_RULES}, got {beta!r}"
    )
  else:  # an int is a float here: 0 is beta = 0.0, 1 is 1.0 (out of range)
    check_with_library("beta", beta)


def check_state_dtype(config: "TrainConfig") -> None:
  """``state_dtype``: one of :data:`STATE_DTYPES`; other than float32 only
  for balanced Adam, whose state it is."""
  check_choice("state_dtype", config.state_dtype, STATE_DTYPES)
  if config.state_dtype != "float32" and config.optimizer != "balanced_adam":
    raise ConfigError(
      f"config.state_dtype={config.state_dtype!r} sets balanced Adam's state,"
      f" but config.optimizer={config.optimizer!r}: use"
      " optimizer='balanced_adam' or state_dtype='float32'"
    )


def check_pilot(config: "TrainConfig") -> None:
  """The ``beta="auto"`` pilot's fields, by ``balanced_optax.select_beta``'s
  rules: at least two distinct lags in [1, pilot_steps - 1], and probes that
  split evenly into :data:`PILOT_NUM_GROUPS` groups."""
  check_integer("pilot_steps", config.pilot_steps, 3)
  lags = config.pilot_lags
  lag_values = (
    [_as_integer(n) for n in lags] if isinstance(lags, tuple | list) else [None]
  )
  if (
    None in lag_values
    or len(set(lag_values)) < 2
    or min(lag_values) < 1
    or max(lag_values) >= config.pilot_steps
  ):
    raise ConfigError(
      "config.pilot_lags must hold at least two distinct integers in"
      f" [1, config.pilot_steps - 1] = [1, {config.pilot_steps - 1}], got {lags!r}"
    )
  probes = _as_integer(config.pilot_num_probes)
  if probes is None or probes < PILOT_NUM_GROUPS or probes % PILOT_NUM_GROUPS:
    raise ConfigError(
      f"config.pilot_num_probes must be a multiple of {PILOT_NUM_GROUPS} (the"
      f" pilot's noise groups) >= {PILOT_NUM_GROUPS}, got {config.pilot_num_probes!r}"
    )


def check_transformer(config: Any) -> None:
  """The model fields both examples share: ``d_model``, ``num_layers``,
  ``num_heads`` (dividing ``d_model``) and ``mlp_ratio``."""
  check_integer("d_model", config.d_model, 1)
  check_integer("num_layers", config.num_layers, 0)
  check_integer("num_heads", config.num_heads, 1)
  if config.d_model % config.num_heads:
    raise ConfigError(
      f"config.num_heads must divide config.d_model={config.d_model}, got"
      f" {config.num_heads}"
    )
  check_integer("mlp_ratio", config.mlp_ratio, 1)


@dataclasses.dataclass
class TrainConfig:
  """Optimisation and bookkeeping fields shared by the trainers.

  Attributes:
    seed: seeds the initialisation and the data order (an integer >= 0).
    data: what to train on; each example documents its values.
    num_steps: optimizer steps (>= 1); also the horizon of the cosine
      schedule.
    batch_size: global batch size (>= 1), split over the ``data`` mesh axis:
      it must divide by the device count.
    optimizer: one of ``balanced_adam``, ``adam``, ``signum``, ``rmsprop``,
      ``sgd`` (see ``examples.common.optim``).
    learning_rate: peak learning rate (>= 0) of the warmup + cosine schedule.
    warmup_steps: linear warmup from 0 to ``learning_rate`` (>= 0; one
      longer than ``num_steps`` is cut there).
    final_lr_fraction: the cosine decays to this fraction of the peak, in
      [0, 1].
    beta: balanced Adam's one memory (beta1 = beta2 = beta): a float in
      [0, 1); ``"auto"``, chosen before training by a short pilot on this
      run's own recipe (``balanced_optax.select_beta``, early memory
      selection [FH26c]); ``"refresh"``, ``balanced_optax.beta_from_refresh``
      of ``num_steps`` snapped to ``balanced_optax.BETA_GRID`` [FH26b], a
      prior that costs nothing; or ``"run_length"``, the same rule with
      R = :data:`RUN_LENGTH_REFRESH` (``1 - 344.5 / num_steps``) within
      [0.68377, 0.999], the rule the beta-selection benchmark supports (the
      trainers' default). Optimizers other than balanced Adam ignore beta;
      ``"auto"`` needs ``optimizer=balanced_adam``.
      See ``examples.common.beta``.
    pilot_steps: updates of the ``beta="auto"`` pilot (the paper's 200;
      >= 3).
    pilot_lags: lags n of the pilot's change fit, at least two distinct, in
      [1, pilot_steps - 1]; checkpoints at ``pilot_steps - n``.
    pilot_num_probes: fresh training-batch gradients drawn at each pilot
      checkpoint (split into 4 groups for the noise estimate: a multiple of 4).
    state_dtype: balanced Adam's moments: ``float32``, ``bfloat16``, or the
      low-bit ``int8`` (2.05 bytes per parameter) and ``int4`` (1.05) of
      ``balanced_optax``'s state_dtype, for leaves of 4096 elements or more
      (``state_min_size``; smaller ones keep float32). Needs
      ``optimizer=balanced_adam`` unless ``float32``.
    state_min_size: with a low-bit ``state_dtype``, leaves with fewer
      elements keep float32 moments (an integer >= 0; bitsandbytes' 4096).
    b1: Adam's first-moment memory; Signum's momentum; in [0, 1).
    b2: Adam's second-moment memory; RMSprop's decay; in [0, 1).
    eps: added to the denominator of the adaptive optimizers (>= 0).
    momentum: SGD's heavy-ball momentum, in [0, 1) (0 disables it).
    weight_decay: decoupled weight decay (>= 0), applied to params with
      ndim >= 2.
    grad_clip_norm: clip the global gradient norm to this (>= 0; 0 disables).
    log_every: steps between train-metric log lines (>= 1).
    eval_every: steps between evaluations (>= 1; and at the last step).
    checkpoint_every: steps between checkpoints (>= 1; and at the last step).
    max_checkpoints: how many recent checkpoints to keep (>= 1).
    halt_after_steps: stop after this step, as a preemption would, with a
      checkpoint; the schedule still spans ``num_steps`` (in [0, num_steps];
      0: run to the end).
    fsdp: shard params and optimizer state over the ``data`` mesh axis.
    progress_bar: show a tqdm progress bar.
  """

  seed: int = 0
  data: str = ""
  num_steps: int = 1000
  batch_size: int = 32
  optimizer: str = "balanced_adam"
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  final_lr_fraction: float = 0.1
  # `object`: ml_collections reads an `object` field as a Python literal, so
  # --config.beta=0.9 gives a float and --config.beta=auto a string; it
  # cannot parse a `float | str` annotation.
  beta: object = 0.95
  pilot_steps: int = 200
  pilot_lags: tuple[int, ...] = (20, 50, 100)
  pilot_num_probes: int = 16
  state_dtype: str = "float32"
  state_min_size: int = 4096
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  momentum: float = 0.9
  weight_decay: float = 0.0
  grad_clip_norm: float = 1.0
  log_every: int = 50
  eval_every: int = 500
  checkpoint_every: int = 500
  max_checkpoints: int = 2
  halt_after_steps: int = 0
  fsdp: bool = True
  progress_bar: bool = True

  def validate(self) -> None:
    """Raises :class:`ConfigError` for the first field outside its range.

    Builds and writes nothing, so that a bad field fails before the model,
    the checkpoints or the workdir exist. The optimizer's hyperparameters go
    through balanced_optax's own checks (:func:`check_with_library`).
    """
    check_integer("seed", self.seed, 0, MAX_SEED)
    check_type("data", self.data, str)
    check_integer("num_steps", self.num_steps, 1)
    check_integer("batch_size", self.batch_size, 1)
    check_choice("optimizer", self.optimizer, OPTIMIZERS)
    check_with_library("learning_rate", self.learning_rate)
    check_integer("warmup_steps", self.warmup_steps, 0)
    check_number("final_lr_fraction", self.final_lr_fraction, 0, 1)
    check_beta(self)
    check_pilot(self)
    check_state_dtype(self)
    check_integer("state_min_size", self.state_min_size, 0)
    # Each is a memory in [0, 1), as balanced Adam's beta is.
    for field in ("b1", "b2", "momentum"):
      check_with_library(field, getattr(self, field), argument="beta")
    check_with_library("eps", self.eps)
    check_with_library("weight_decay", self.weight_decay)
    check_number("grad_clip_norm", self.grad_clip_norm, 0)
    for field in ("log_every", "eval_every", "checkpoint_every", "max_checkpoints"):
      check_integer(field, getattr(self, field), 1)
    check_integer("halt_after_steps", self.halt_after_steps, 0, self.num_steps)
    check_type("fsdp", self.fsdp, bool)
    check_type("progress_bar", self.progress_bar, bool)
