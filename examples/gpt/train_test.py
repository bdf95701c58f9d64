"""End-to-end tests of the GPT trainer on the tiny config (seconds each)."""

import contextlib
import dataclasses
import io
import json
import math
import os
import socket
import subprocess
import textwrap

import jax
import numpy as np
import pytest

import balanced_optax
from examples.common import beta as beta_lib
from examples.common import metrics as metrics_lib
from examples.common.checkpoint import Checkpointer
from examples.gpt import input_pipeline, train

# End-to-end training runs (seconds each to compile): the full tier only.
pytestmark = pytest.mark.slow

# train_loss of the first step of the tiny config on the unseen corpus: the
# loss of the initial parameters on batch 0. Near ln(vocab size) because the
# initial logits are almost uniform.
GOLDEN_FIRST_LOSS = 3.5055976
# A pilot of 20 updates (the paper's: 200), lags 5 and 10, 8 probes.
SMALL_PILOT = {"pilot_steps": 20, "pilot_lags": (5, 10), "pilot_num_probes": 8}


def read_metrics(workdir) -> list[dict]:
  return metrics_lib.read_history(os.path.join(workdir, metrics_lib.METRICS_FILE))


def test_first_step_golden_loss(reference_run, tiny_config):
  _, _, history = reference_run
  first = history[0]
  assert first["step"] == 1
  assert first["train_loss"] == pytest.approx(GOLDEN_FIRST_LOSS, abs=2e-5)
  corpus = input_pipeline.make_corpus(input_pipeline.read_text(tiny_config.data))
  assert abs(first["train_loss"] - math.log(corpus.vocab_size)) < 0.1
  assert first["learning_rate"] == 0.0  # warmup starts at 0


def test_loss_decreases(reference_run):
  _, _, history = reference_run
  train_loss = {r["step"]: r["train_loss"] for r in history}
  val_loss = {r["step"]: r["val_loss"] for r in history if "val_loss" in r}
  assert sorted(val_loss) == [100, 200]
  assert train_loss[30] < train_loss[1] - 0.5
  assert val_loss[100] < train_loss[1] - 1.0
  assert val_loss[200] < val_loss[100]


def test_learns_an_unseen_corpus_within_200_steps(reference_run):
  _, final, _ = reference_run
  assert final["step"] == 200
  assert final["val_loss"] < 3.0  # nats/char, on held-out text never trained on


def test_logs_optimizer_metrics(reference_run, tiny_config):
  _, _, history = reference_run
  record = history[-1]
  for key in ("learning_rate", "grad_rms", "update_rms", "update_rms_over_lr"):
    assert math.isfinite(record[key]) and record[key] > 0, key
  assert record["update_rms_over_lr"] == pytest.approx(
    record["update_rms"] / record["learning_rate"], rel=1e-5
  )
  assert record["tokens_per_sec"] > 0
  end_lr = tiny_config.learning_rate * tiny_config.final_lr_fraction
  assert record["learning_rate"] == pytest.approx(end_lr, rel=1e-2)


def test_writes_sample_and_curves(reference_run, tiny_config):
  workdir, _, _ = reference_run
  with open(os.path.join(workdir, train.SAMPLE_FILE)) as f:
    sample = f.read()
  corpus = input_pipeline.make_corpus(input_pipeline.read_text(tiny_config.data))
  assert sample.startswith(tiny_config.sample_prompt)
  assert len(sample) == len(tiny_config.sample_prompt) + tiny_config.sample_chars
  assert set(sample) <= set(corpus.vocab)
  assert os.path.getsize(os.path.join(workdir, metrics_lib.CURVES_FILE)) > 1000


def test_resume_reproduces_the_uninterrupted_run(reference_run, tiny_config, tmp_path):
  """100 steps, stop, run the same config again: identical metrics and sample."""
  ref_dir, ref_final, ref_history = reference_run
  train.train_and_evaluate(
    dataclasses.replace(tiny_config, halt_after_steps=100), str(tmp_path)
  )
  assert read_metrics(tmp_path)[-1]["step"] == 100
  assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 100

  final = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert metrics_lib.without_timing(
    read_metrics(tmp_path)
  ) == metrics_lib.without_timing(ref_history)
  assert final["val_loss"] == ref_final["val_loss"]
  sample = (tmp_path / train.SAMPLE_FILE).read_text()
  assert sample == open(f"{ref_dir}/{train.SAMPLE_FILE}").read()


def test_command_line_overrides_and_refresh_rule(tiny_config, tmp_path, run_main):
  """``python -m examples.gpt.main --config=FILE --config.FIELD=VALUE``."""
  out = run_main(
    f"--config.data={tiny_config.data}",
    "--config.num_steps=12",
    "--config.learning_rate=3e-3",
    "--config.beta=refresh",
    "--config.sample_chars=0",
    "--config.progress_bar=false",
    f"--workdir={tmp_path}",
  )
  assert out.returncode == 0, out.stderr[-3000:]
  beta = balanced_optax.beta_from_refresh(t_es=12, grid=balanced_optax.BETA_GRID)
  final = json.loads(out.stdout.strip().splitlines()[-1])
  assert final["beta"] == beta and final["beta_refresh/t_es"] == 12
  assert "from the refresh rule with T_ES = num_steps = 12" in out.stdout
  history = {r["step"]: r for r in read_metrics(tmp_path)}
  assert sorted(history) == [0, 1, 10, 12]
  # 10 warmup steps to the overridden peak: update 9 (step 10) is at 9/10.
  assert history[10]["learning_rate"] == pytest.approx(0.9 * 3e-3, rel=1e-6)


@pytest.fixture(scope="module")
def auto_run(tiny_config, tmp_path_factory, unoptimized_xla):
  """A tiny beta=auto run halted at step 20, then resumed to its end (40)."""
  config = dataclasses.replace(tiny_config, beta="auto", num_steps=40, **SMALL_PILOT)
  workdir = tmp_path_factory.mktemp("auto")
  outputs = []
  for halt in (20, 0):
    with unoptimized_xla(), contextlib.redirect_stdout(io.StringIO()) as out:
      final = train.train_and_evaluate(
        dataclasses.replace(config, halt_after_steps=halt), str(workdir)
      )
    outputs.append(out.getvalue())
  return config, workdir, final, outputs


@pytest.mark.slow
def test_auto_chooses_beta_with_a_pilot_and_logs_it(auto_run):
  _, workdir, final, (first, _) = auto_run
  selection = json.loads((workdir / beta_lib.SELECTION_FILE).read_text())
  beta = selection["beta"]
  assert 0.68377 <= beta <= 0.999 and beta in balanced_optax.BETA_GRID
  # 20 pilot updates + 8 probes at each of the checkpoints 10, 15, 20.
  assert selection["gradient_evaluations"] == 20 + 8 * 3
  assert selection["noise"] > 0 and selection["lags"] == [5, 10]
  assert f"early memory selection chose beta={beta:.5f}" in first
  record = read_metrics(workdir)[0]
  assert record["step"] == 0 and record["beta"] == beta
  assert record["beta_selection/noise"] == pytest.approx(selection["noise"])
  assert final["beta"] == beta


@pytest.mark.slow
def test_auto_trains_from_the_pilots_init_with_the_chosen_beta(
  auto_run, tmp_path, unoptimized_xla
):
  """Resumed without re-running the pilot, the auto run equals a plain run
  at the chosen beta from the same initialisation and step 0."""
  config, workdir, _, (_, resumed) = auto_run
  assert "not re-run" in resumed and "early memory selection chose" not in resumed
  history = read_metrics(workdir)
  beta = history[0]["beta"]
  assert history[1]["train_loss"] == pytest.approx(GOLDEN_FIRST_LOSS, abs=2e-5)
  with unoptimized_xla():  # as auto_run compiled
    train.train_and_evaluate(dataclasses.replace(config, beta=beta), str(tmp_path))
  assert metrics_lib.without_timing(history[1:]) == metrics_lib.without_timing(
    read_metrics(tmp_path)
  )


_MULTI_DEVICE_RUN = textwrap.dedent(
  """
  import dataclasses, json, sys
  import jax
  from examples.common import loop
  from examples.gpt import input_pipeline, train
  from examples.gpt.configs import tiny

  data, workdir, fields = sys.argv[1:]
  config = dataclasses.replace(
    tiny.get_config(), data=data, halt_after_steps=20, progress_bar=False,
    **json.loads(fields)
  )
  corpus = input_pipeline.make_corpus(input_pipeline.read_text(data))
  _, _, params = loop.train(config, workdir, train.make_task(config, corpus))
  specs = [x.sharding.spec for x in jax.tree.leaves(params)]
  print(json.dumps({"devices": jax.device_count(),
                    "processes": jax.process_count(),
                    "sharded": sum(any(s is not None for s in spec) for spec in specs),
                    "leaves": len(specs)}))
  """
)


def _cpu_env(subprocess_env, num_devices, **extra):
  return subprocess_env(
    XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
    JAX_PLATFORMS="cpu",
    # XLA's optimisation passes take 9 of the 8-device program's 10 s of
    # compiling, for 20 tiny steps; sharding and partitioning still run.
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    **extra,
  )


def _run_on_cpus(num_devices, data, workdir, subprocess_env, python, **fields):
  out = subprocess.run(
    [python, "-c", _MULTI_DEVICE_RUN, data, str(workdir), json.dumps(fields)],
    env=_cpu_env(subprocess_env, num_devices),
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1]), read_metrics(workdir)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _assert_matches_reference(history, reference):
  reference = {r["step"]: r for r in reference}
  assert [r["step"] for r in history] == [1, 10, 20]
  for record in history:
    ref = reference[record["step"]]
    for key in ("train_loss", "grad_rms", "update_rms"):
      np.testing.assert_allclose(record[key], ref[key], rtol=2e-5, err_msg=key)


@pytest.mark.slow
def test_eight_simulated_devices_match_one(
  reference_run, tiny_config, tmp_path, subprocess_env, python
):
  """Data parallel + FSDP over 8 CPU devices: the same losses to rounding."""
  info, history = _run_on_cpus(
    8, tiny_config.data, tmp_path / "8", subprocess_env, python
  )
  assert info["devices"] == 8
  assert 0 < info["sharded"] < info["leaves"]  # big params split, small ones not
  if jax.default_backend() == "cpu":
    reference = reference_run[2]
  else:  # the in-process reference ran on an accelerator
    _, reference = _run_on_cpus(
      1, tiny_config.data, tmp_path / "1", subprocess_env, python
    )
  _assert_matches_reference(history, reference)


@pytest.mark.slow
def test_two_processes_match_one(
  reference_run, tiny_config, tmp_path, subprocess_env, python
):
  """Launched as 2 processes of 2 CPU devices each (jax.distributed, set up
  by the trainer from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID; collectives through gloo): the same losses as 1 device,
  one metrics file, one checkpoint."""
  workdir, port = tmp_path / "2x2", _free_port()
  procs = [
    subprocess.Popen(
      [python, "-c", _MULTI_DEVICE_RUN, tiny_config.data, str(workdir), "{}"],
      env=_cpu_env(
        subprocess_env,
        2,
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
        JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(i),
      ),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=180) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
    info = json.loads(out.strip().splitlines()[-1])
    assert (info["processes"], info["devices"]) == (2, 4)
    assert 0 < info["sharded"] < info["leaves"]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["20"]
  if jax.default_backend() == "cpu":
    reference = reference_run[2]
  else:
    _, reference = _run_on_cpus(
      1, tiny_config.data, tmp_path / "1", subprocess_env, python
    )
  _assert_matches_reference(read_metrics(workdir), reference)


@pytest.mark.slow
def test_auto_on_eight_simulated_devices_matches_one(
  auto_run, tmp_path, subprocess_env, python
):
  """beta=auto with FSDP over 8 CPU devices: the pilot measures the same
  noise and change to rounding, chooses the same beta, and trains the same."""
  config, workdir, _, _ = auto_run
  fields = dict(beta="auto", num_steps=config.num_steps, **SMALL_PILOT)
  info, history = _run_on_cpus(
    8, config.data, tmp_path / "8", subprocess_env, python, **fields
  )
  assert info["devices"] == 8 and 0 < info["sharded"] < info["leaves"]
  selection = json.loads((tmp_path / "8" / beta_lib.SELECTION_FILE).read_text())
  reference = json.loads((workdir / beta_lib.SELECTION_FILE).read_text())
  assert selection["beta"] == reference["beta"]
  for key in ("noise", "change", "beta_continuous"):
    np.testing.assert_allclose(selection[key], reference[key], rtol=1e-3, err_msg=key)
  if jax.default_backend() == "cpu":
    reference_history = read_metrics(workdir)
  else:
    _, reference_history = _run_on_cpus(
      1, config.data, tmp_path / "1", subprocess_env, python, **fields
    )
  assert history[0]["beta"] == reference_history[0]["beta"]
  _assert_matches_reference(history[1:], reference_history[1:])


# ---- Low-bit optimizer state (--config.state_dtype=int8).

# 40 steps of the tiny config, halted at 20 for the resume test.
_LOW_BIT = {"state_dtype": "int8", "num_steps": 40, "eval_every": 20}


@pytest.fixture(scope="module")
def int8_run(tiny_config, tmp_path_factory):
  """``(workdir, final_metrics)`` of an uninterrupted int8-state run."""
  workdir = tmp_path_factory.mktemp("int8")
  config = dataclasses.replace(tiny_config, **_LOW_BIT, checkpoint_every=20)
  return workdir, train.train_and_evaluate(config, str(workdir))


def test_int8_state_trains_and_resumes_bit_exactly(int8_run, tiny_config, tmp_path):
  workdir, final = int8_run
  history = read_metrics(workdir)
  assert history[-1]["train_loss"] < 0.85 * history[0]["train_loss"]
  # The checkpoint holds low-bit codes for the large leaves.
  state = Checkpointer(str(workdir / "checkpoints")).restore(40)
  dtypes = {str(x.dtype) for x in jax.tree.leaves(state["opt_state"])}
  assert "uint16" in dtypes and "int16" in dtypes
  config = dataclasses.replace(tiny_config, **_LOW_BIT, checkpoint_every=20)
  train.train_and_evaluate(
    dataclasses.replace(config, halt_after_steps=20), str(tmp_path)
  )
  resumed = train.train_and_evaluate(config, str(tmp_path))
  assert metrics_lib.without_timing(read_metrics(tmp_path)) == (
    metrics_lib.without_timing(history)
  )
  assert resumed["val_loss"] == final["val_loss"]


def test_int8_state_on_eight_simulated_devices_tracks_one(
  int8_run, tiny_config, tmp_path, subprocess_env, python
):
  """FSDP over 8 CPU devices with int8 state: codes split with their params.
  The gradients' reductions round apart from one device's, and the codes'
  rounding bits hash values, so the losses agree to rounding noise, not
  bits (measured: 5e-5 relative at step 20)."""
  info, history = _run_on_cpus(
    8, tiny_config.data, tmp_path / "8", subprocess_env, python, **_LOW_BIT
  )
  assert info["devices"] == 8
  assert 0 < info["sharded"] < info["leaves"]
  reference = {r["step"]: r for r in read_metrics(int8_run[0])}
  assert [r["step"] for r in history][:3] == [1, 10, 20]
  for record in history[:3]:
    np.testing.assert_allclose(
      record["train_loss"], reference[record["step"]]["train_loss"], rtol=5e-4
    )
