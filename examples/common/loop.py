"""The training loop both examples run: resume, step, log, evaluate, save.

An example describes itself with a :class:`Task` (a model, a loss, its data
as functions of the step, an evaluation); :func:`train` does the rest the same
way for both. The loop is exactly resumable: the data of step s is a function
of s, the state is checkpointed whole, and the metrics file is cut back to
the restored step, so an interrupted and resumed run writes the same
``metrics.jsonl`` values as an uninterrupted one.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.common import beta as beta_lib
from examples.common import mesh as mesh_lib
from examples.common import optim, train_step
from examples.common.checkpoint import Checkpointer
from examples.common.config import ConfigError, TrainConfig
from examples.common.metrics import TIMING_SUFFIX, MetricsWriter
from examples.common.progress import progress_bar

HostBatch = dict[str, np.ndarray]


@dataclasses.dataclass
class Task:
  """What an example gives the loop.

  Attributes:
    make_model: returns the freshly initialised model (from ``config.seed``);
      traced under ``jax.jit`` so the parameters are created sharded.
    loss_fn: ``(model, batch) -> (mean loss, aux metrics)``.
    train_batch: ``step -> global batch`` as numpy arrays; a pure function of
      the step, so a resumed run sees the same data.
    eval_fn: ``(model, batch) -> sums`` over the batch (a dict of scalars).
    eval_batches: returns the evaluation batches (the same every time).
    eval_metrics: ``summed eval_fn outputs -> metrics`` (e.g. ``val_loss``).
    items_per_step: tokens or images per step, for the throughput.
    unit: ``"tokens"`` or ``"images"``; throughput is ``{unit}_per_sec``.
  """

  make_model: Callable[[], nnx.Module]
  loss_fn: train_step.LossFn
  train_batch: Callable[[int], HostBatch]
  eval_fn: train_step.EvalFn
  eval_batches: Callable[[], Iterable[HostBatch]]
  eval_metrics: Callable[[dict[str, float]], dict[str, float]]
  items_per_step: int
  unit: str


def _evaluate(eval_step, params, task: Task, sharding) -> dict[str, float]:
  sums = {}
  for batch in task.eval_batches():
    out = jax.device_get(eval_step(params, mesh_lib.put_batch(batch, sharding)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  return task.eval_metrics(sums)


def _initial_state(
  task: Task, tx, mesh, fsdp: bool, checkpointer: Checkpointer, params=None
):
  """The newest checkpoint if there is one, else a fresh state, created sharded.

  Args:
    params: the initial parameters of a fresh state (placed as the state's
      shardings say); None initialises them from ``task.make_model``.

  Returns:
    ``(graphdef, state, state_sharding, start_step)``.
  """
  graphdef = nnx.graphdef(nnx.eval_shape(task.make_model))

  def init_state(params) -> train_step.TrainState:
    if params is None:
      params = _init_params(task)
    return train_step.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

  abstract = jax.eval_shape(init_state, None)
  sharding = mesh_lib.state_shardings(abstract, mesh, fsdp)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract,
    sharding,
  )
  state, start = checkpointer.restore_latest(abstract)
  if not start:
    state = jax.jit(init_state, out_shardings=sharding)(params)
  return graphdef, state, sharding, start


def _init_params(task: Task):
  return nnx.to_pure_dict(nnx.state(task.make_model()))


def _resolve_beta(config, workdir, task, mesh, checkpointer) -> tuple[Any, Any, dict]:
  """``config`` with a numeric beta, the initial params the choice was made
  from (None if none were made), and the ``metrics.jsonl`` record of it."""
  made = {}

  def pilot():
    graphdef = nnx.graphdef(nnx.eval_shape(task.make_model))
    init_params = functools.partial(_init_params, task)
    sharding = mesh_lib.state_shardings(jax.eval_shape(init_params), mesh, config.fsdp)
    made["params"] = jax.jit(init_params, out_shardings=sharding)()
    return beta_lib.run_pilot(
      config,
      task.loss_fn,
      task.train_batch,
      graphdef,
      made["params"],
      mesh_lib.batch_sharding(mesh),
    )

  resuming = checkpointer.latest_step() is not None
  beta, record = beta_lib.resolve(config, workdir, pilot, resuming)
  return dataclasses.replace(config, beta=beta), made.get("params"), record


def _compile_steps(
  config, task, graphdef, tx, schedule, state_sharding, batch_sharding
):
  """The jitted train and eval steps, with their shardings; the train step
  donates the old state's buffers to the new state."""
  moments = None
  if config.optimizer == "balanced_adam":
    moments = functools.partial(
      train_step.moment_metrics, beta=config.beta, eps=config.eps
    )
  replicated = mesh_lib.replicated(batch_sharding.mesh)
  step_fn = jax.jit(
    train_step.make_train_step(graphdef, task.loss_fn, tx, schedule, moments),
    in_shardings=(state_sharding, batch_sharding),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    train_step.make_eval_step(graphdef, task.eval_fn),
    in_shardings=(state_sharding.params, batch_sharding),
    out_shardings=replicated,
  )
  return step_fn, eval_step


def train(
  config: TrainConfig, workdir: str, task: Task
) -> tuple[dict, nnx.GraphDef, Any]:
  """Trains ``task`` as ``config`` says, resuming from ``workdir`` if possible.

  A ``beta`` of ``"auto"`` or ``"refresh"`` is resolved to a number first
  (:mod:`examples.common.beta`); ``"auto"`` trains from the very parameters
  its pilot started from. Logs train metrics at step 1, every ``log_every``
  steps and at the end; evaluates every ``eval_every`` steps and at
  ``num_steps``; checkpoints every ``checkpoint_every`` steps and at the end.

  Args:
    config: the run's config; its shared fields are checked first
      (:meth:`TrainConfig.validate`), before anything is built.
    workdir: checkpoints go to ``workdir/checkpoints``, metrics to
      ``workdir/metrics.jsonl`` and ``workdir/loss_curves.png``.
    task: the example.

  Returns:
    ``(final_metrics, graphdef, params)``: the latest value of every logged
    metric, and the trained model as ``nnx.merge(graphdef, params)``.
  """
  # The fields the loop uses; train_and_evaluate has checked the example's.
  TrainConfig.validate(config)
  mesh_lib.maybe_initialize_distributed()
  mesh = mesh_lib.make_mesh()
  if config.batch_size % mesh.size:
    raise ConfigError(
      f"config.batch_size must be a multiple of the device count {mesh.size},"
      f" got {config.batch_size}"
    )
  is_first_process = jax.process_index() == 0
  if is_first_process:
    print(f"Training on {jax.device_count()} {jax.default_backend()} device(s)")
  checkpointer = Checkpointer(
    os.path.join(workdir, "checkpoints"), config.max_checkpoints
  )
  config, pilot_params, beta_record = _resolve_beta(
    config, workdir, task, mesh, checkpointer
  )
  tx, schedule = optim.make_optimizer(config)
  graphdef, state, state_sharding, start = _initial_state(
    task, tx, mesh, config.fsdp, checkpointer, pilot_params
  )
  del pilot_params  # the state holds a copy
  if is_first_process and start:
    print(f"Resuming from the checkpoint of step {start} in {workdir}")
  writer = MetricsWriter(workdir, start, enabled=is_first_process)
  if beta_record and not start:  # a resumed run's file has it already
    writer.write({"step": 0, **beta_record})

  batch_sharding = mesh_lib.batch_sharding(mesh)
  step_fn, eval_step = _compile_steps(
    config, task, graphdef, tx, schedule, state_sharding, batch_sharding
  )

  end = config.num_steps
  if 0 < config.halt_after_steps < end:
    end = config.halt_after_steps
  bar = progress_bar(start, config.num_steps, config.progress_bar)
  # Throughput counts training only: not compiling (the first step of a
  # run), evaluating or saving.
  timed_steps, timed_seconds = 0, 0.0
  in_flight = None
  for step in range(start, end):
    tick = time.perf_counter()
    state, metrics = step_fn(
      state, mesh_lib.put_batch(task.train_batch(step), batch_sharding)
    )
    # Keep one step in flight, not hundreds: the bar then shows finished
    # steps, and host memory holds at most two batches.
    jax.block_until_ready(in_flight)
    in_flight = metrics["train_loss"]
    done = step + 1
    bar.update(1)
    is_log = done % config.log_every == 0 or done in (1, end)
    is_eval = done % config.eval_every == 0 or done == config.num_steps
    if step == start or is_log or is_eval:
      metrics = jax.device_get(metrics)  # waits for the step to finish
    if step > start:
      timed_steps += 1
      timed_seconds += time.perf_counter() - tick
    if is_log or is_eval:
      record = {"step": done, **metrics}
      if timed_steps:
        record[f"{task.unit}{TIMING_SUFFIX}"] = (
          timed_steps * task.items_per_step / timed_seconds
        )
        timed_steps, timed_seconds = 0, 0.0
      if is_eval:
        record.update(_evaluate(eval_step, state.params, task, batch_sharding))
      writer.write(record)
      shown = ("loss", "accuracy", TIMING_SUFFIX)
      bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.endswith(shown)})
    if done % config.checkpoint_every == 0 or done == end:
      checkpointer.save(done, state)
  bar.close()
  checkpointer.close()
  writer.close()
  return writer.latest(), graphdef, state.params
