"""The fields every trainer shares.

Each example's config is a dataclass that extends :class:`TrainConfig` with
its model and data fields; ``configs/default.py`` and ``configs/tiny.py``
return instances from ``get_config()``, the form ``ml_collections``'
``config_flags.DEFINE_config_file`` loads, so that every field can be set on
the command line (``--config.learning_rate=3e-3``). A run is reproducible
from its config alone: the data order, the initialisation, the schedule and
(with ``beta="auto"``) the pilot that picks beta are all functions of it.
"""

import dataclasses

# What ``beta`` may be besides a float in [0, 1).
BETA_RULES = ("auto", "refresh")


@dataclasses.dataclass
class TrainConfig:
  """Optimisation and bookkeeping fields shared by the trainers.

  Attributes:
    seed: seeds the initialisation and the data order.
    data: what to train on; each example documents its values.
    num_steps: optimizer steps; also the horizon of the cosine schedule.
    batch_size: global batch size, split over the ``data`` mesh axis.
    optimizer: one of ``balanced_adam``, ``adam``, ``signum``, ``rmsprop``,
      ``sgd`` (see ``examples.common.optim``).
    learning_rate: peak learning rate of the warmup + cosine schedule.
    warmup_steps: linear warmup from 0 to ``learning_rate``.
    final_lr_fraction: the cosine decays to this fraction of the peak.
    beta: balanced Adam's one memory (beta1 = beta2 = beta): a float in
      [0, 1); ``"auto"``, chosen before training by a short pilot on this
      run's own recipe (``balanced_optax.select_beta``, early memory
      selection [FH26c]); or ``"refresh"``, ``balanced_optax.beta_from_refresh``
      of ``num_steps`` snapped to ``balanced_optax.BETA_GRID`` [FH26b], a
      prior that costs nothing. See ``examples.common.beta``.
    pilot_steps: updates of the ``beta="auto"`` pilot (the paper's 200).
    pilot_lags: lags n of the pilot's change fit; checkpoints at
      ``pilot_steps - n``.
    pilot_num_probes: fresh training-batch gradients drawn at each pilot
      checkpoint (split into 4 groups for the noise estimate).
    b1: Adam's first-moment memory; Signum's momentum.
    b2: Adam's second-moment memory; RMSprop's decay.
    eps: added to the denominator of the adaptive optimizers.
    momentum: SGD's heavy-ball momentum (0 disables it).
    weight_decay: decoupled weight decay, applied to params with ndim >= 2.
    grad_clip_norm: clip the global gradient norm to this (0 disables).
    log_every: steps between train-metric log lines.
    eval_every: steps between evaluations (and at the last step).
    checkpoint_every: steps between checkpoints (and at the last step).
    max_checkpoints: how many recent checkpoints to keep.
    halt_after_steps: stop after this step, as a preemption would, with a
      checkpoint; the schedule still spans ``num_steps`` (0: run to the end).
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
