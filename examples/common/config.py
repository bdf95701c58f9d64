"""The fields every trainer shares, and overriding them from strings.

Each example's config is a dataclass that extends :class:`TrainConfig` with
its model and data fields; ``configs/default.py`` and ``configs/tiny.py``
return instances. A run is reproducible from its config alone: the data
order, the initialisation and the schedule are all functions of it.
"""

import dataclasses
import types
import typing


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
    beta: balanced Adam's one memory (beta1 = beta2 = beta).
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
  beta: float = 0.95
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


def _parse(text: str, kind: typing.Any) -> typing.Any:
  """Converts ``text`` to the field type ``kind`` (bool, int, float, str)."""
  if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
    if text.lower() == "none":
      return None
    kind = next(k for k in typing.get_args(kind) if k is not type(None))
  if kind is bool:
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"expected a boolean, got {text!r}")
  return kind(text)


def override(config: TrainConfig, overrides: dict[str, str]) -> TrainConfig:
  """Returns ``config`` with fields replaced by values parsed from strings.

  Args:
    config: a dataclass instance.
    overrides: field name -> value as typed on a command line
      (``{"learning_rate": "3e-3", "optimizer": "adam"}``).

  Returns:
    A new config of the same class.

  Raises:
    ValueError: for a name that is not a field, or a value of the wrong type.
  """
  hints = typing.get_type_hints(type(config))
  unknown = sorted(set(overrides) - set(hints))
  if unknown:
    raise ValueError(f"unknown config fields {unknown}; valid: {sorted(hints)}")
  values = {}
  for name, text in overrides.items():
    try:
      values[name] = _parse(text, hints[name])
    except ValueError as e:
      raise ValueError(f"--{name}={text}: {e}") from None
  return dataclasses.replace(config, **values)
