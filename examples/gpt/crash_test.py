"""A trainer killed with SIGKILL, even mid-save, resumes with nothing lost
but the last checkpoint interval, and ends exactly where an uninterrupted run
ends."""

import json
import os
import signal
import subprocess
import textwrap
import time

import jax
import numpy as np
import pytest

from examples.common import metrics as metrics_lib
from examples.common.checkpoint import Checkpointer
from examples.gpt import train

CHECKPOINT_EVERY = 20
TINY_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "tiny.py")

# Runs the trainer, but SIGKILLs itself inside the save of step KILL_STEP:
# after every array of the checkpoint is written to its temporary directory,
# before orbax commits it by renaming. (orbax internals: if they move, this
# fails loudly, not silently.)
_KILL_DURING_SAVE = textwrap.dedent(
  """
  import os, signal, sys
  from orbax.checkpoint._src.path import atomicity

  kill_step, argv = sys.argv[1], sys.argv[2:]
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize_or_die(self, *args, **kwargs):
    if self.get().name.startswith(kill_step + "."):
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
  from absl import app
  from examples.gpt import main
  sys.argv = ["main", *argv]  # config_flags reads its overrides from sys.argv
  app.run(main.main)
  """
)


def _logged_steps(workdir) -> list[int]:
  path = os.path.join(workdir, metrics_lib.METRICS_FILE)
  return [r["step"] for r in metrics_lib.read_history(path)]


def _checkpoint_dirs(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _kill_when_logged(proc: subprocess.Popen, workdir, step: int, timeout: float = 120):
  """SIGKILLs ``proc`` as soon as ``metrics.jsonl`` reaches ``step``."""
  deadline = time.monotonic() + timeout
  while not _logged_steps(workdir) or max(_logged_steps(workdir)) < step:
    assert proc.poll() is None, "the trainer ended before it could be killed"
    assert time.monotonic() < deadline, "the trainer never reached the step"
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  return proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_anytime_resumes_exactly(
  reference_run, tiny_config, tmp_path, subprocess_env, python
):
  ref_dir, _, ref_history = reference_run
  args = [
    f"--config={TINY_CONFIG}",
    f"--config.data={tiny_config.data}",
    f"--config.checkpoint_every={CHECKPOINT_EVERY}",
    "--config.max_checkpoints=3",
    "--config.progress_bar=false",
    f"--workdir={tmp_path}",
  ]
  env = subprocess_env()
  trainer = [python, "-m", "examples.gpt.main", *args]

  # 1. Killed in the middle of saving step 60: 20 and 40 are complete, 60 is
  #    a temporary directory that must never be mistaken for a checkpoint.
  died = subprocess.run(
    [python, "-c", _KILL_DURING_SAVE, "60", *args],
    env=env,
    capture_output=True,
    timeout=120,
  )
  assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
  left = _checkpoint_dirs(tmp_path)
  assert left[:2] == ["20", "40"] and left[2].startswith("60.orbax-checkpoint-tmp"), (
    left
  )
  assert max(_logged_steps(tmp_path)) == 60

  # 2. Resumes from 40; killed from outside once it has logged step 120.
  proc = subprocess.Popen(
    trainer, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
  )
  assert _kill_when_logged(proc, tmp_path, 120) == -signal.SIGKILL
  assert "Resuming from the checkpoint of step 40" in proc.stdout.read().decode()
  killed_at = max(_logged_steps(tmp_path))
  last_complete = Checkpointer(str(tmp_path / "checkpoints")).latest_step()
  assert killed_at - CHECKPOINT_EVERY <= last_complete <= killed_at

  # 3. Runs to the end: the same metrics, sample and final state as a run
  #    that was never interrupted, and only complete checkpoints left.
  done = subprocess.run(trainer, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"Resuming from the checkpoint of step {last_complete}" in done.stdout
  history = metrics_lib.read_history(str(tmp_path / metrics_lib.METRICS_FILE))
  assert metrics_lib.without_timing(history) == metrics_lib.without_timing(ref_history)
  sample = (tmp_path / train.SAMPLE_FILE).read_text()
  assert sample == open(f"{ref_dir}/{train.SAMPLE_FILE}").read()
  assert all(name.isdigit() for name in _checkpoint_dirs(tmp_path))
  restored = Checkpointer(str(tmp_path / "checkpoints")).restore(200)
  expected = Checkpointer(f"{ref_dir}/checkpoints").restore(200)
  jax.tree.map(np.testing.assert_array_equal, restored, expected)


def test_metrics_history_drops_lines_after_the_checkpoint(tmp_path):
  """What a killed run leaves: records past the checkpoint and a cut line."""
  path = tmp_path / metrics_lib.METRICS_FILE
  lines = [json.dumps({"step": s, "train_loss": 1.0 / s}) for s in (10, 20, 30)]
  path.write_text("\n".join(lines) + '\n{"step": 40, "train_lo')
  writer = metrics_lib.MetricsWriter(str(tmp_path), resume_step=20)
  writer.write({"step": 30, "train_loss": np.float32(0.5)})
  writer.close()
  assert metrics_lib.read_history(str(path)) == [
    {"step": 10, "train_loss": 0.1},
    {"step": 20, "train_loss": 0.05},
    {"step": 30, "train_loss": 0.5},
  ]
