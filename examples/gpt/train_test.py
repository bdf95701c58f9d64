"""End-to-end tests of the GPT trainer on the tiny config (seconds each)."""

import json
import math
import os
import socket
import subprocess
import textwrap

import jax
import numpy as np
import pytest

from examples.common import metrics as metrics_lib
from examples.common.checkpoint import Checkpointer
from examples.gpt import input_pipeline, main, train

# train_loss of the first step of the tiny config on the unseen corpus: the
# loss of the initial parameters on batch 0. Near ln(vocab size) because the
# initial logits are almost uniform.
GOLDEN_FIRST_LOSS = 3.5055976


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


def test_resume_reproduces_the_uninterrupted_run(
  reference_run, tiny_config, tmp_path, capsys
):
  """100 steps, stop, rerun the same command: identical metrics and sample."""
  ref_dir, ref_final, ref_history = reference_run
  argv = [
    "--config=tiny",
    f"--workdir={tmp_path}",
    f"--data={tiny_config.data}",
    "--progress_bar=false",
  ]
  main.main([*argv, "--halt_after_steps=100"])
  assert read_metrics(tmp_path)[-1]["step"] == 100
  assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 100

  final = main.main(argv)
  assert "Resuming from the checkpoint of step 100" in capsys.readouterr().out
  assert metrics_lib.without_timing(
    read_metrics(tmp_path)
  ) == metrics_lib.without_timing(ref_history)
  assert final["val_loss"] == ref_final["val_loss"]
  sample = (tmp_path / train.SAMPLE_FILE).read_text()
  assert sample == open(f"{ref_dir}/{train.SAMPLE_FILE}").read()


_MULTI_DEVICE_RUN = textwrap.dedent(
  """
  import dataclasses, json, sys
  import jax
  from examples.common import loop
  from examples.gpt import input_pipeline, train
  from examples.gpt.configs import tiny

  data, workdir = sys.argv[1:]
  config = dataclasses.replace(
    tiny.get_config(), data=data, halt_after_steps=20, progress_bar=False
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


def _run_on_cpus(num_devices, data, workdir, subprocess_env, python):
  out = subprocess.run(
    [python, "-c", _MULTI_DEVICE_RUN, data, str(workdir)],
    env=_cpu_env(subprocess_env, num_devices),
    capture_output=True,
    text=True,
    timeout=120,
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
      [python, "-c", _MULTI_DEVICE_RUN, tiny_config.data, str(workdir)],
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
