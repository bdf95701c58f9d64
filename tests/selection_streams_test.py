"""select_beta on gradient streams of known noise and drift, and its limits.

The streams use the sign model: every coordinate of a probe gradient is +-1
with mean mu_i(t), so |g| = 1, balanced Adam's direction is r = mu (linear in
the gradients) and, in the tensor-balanced sketch, the noise per gradient is
V = sum_p mean_i(1 - mu_i^2) and the drift per update D = |P v|^2 for
mu(t) = mu_0 + t v. The rule's memory is H* = (V / (4 D))^(1/3) [FH26c].
``python -m tests.selection_streams_test`` prints the table of
docs/choosing_beta.md.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax as bo
from balanced_optax import _probes

_LEAVES = {"a": 400, "b": 300}
_PARAMS = {k: np.zeros(n, np.float32) for k, n in _LEAVES.items()}


def _sketched_norm2(tree, seed=0):
  """|P x|^2 with select_beta's sketch for ``seed``."""
  seeds = _probes.leaf_seeds(len(_LEAVES), seed)
  z = _probes.sketch(jax.tree.map(jnp.asarray, tree), seeds, 1024)
  return float(np.sum(np.asarray(z, np.float64) ** 2))


class Stream:
  """Probe gradients whose mean mu(t) is constant, drifts linearly or walks.

  ``h`` is the optimal memory, the H minimising the long-history risk
  V/(2H) + lag error: for a linear drift (lag error D H^2) the rule's
  H* = (V / (4 D))^(1/3) = h; for a random walk of D per update (lag error
  D H / 2) sqrt(V / D) = h, where the rule's H* = (h^2 / 4)^(1/3) is shorter.
  """

  def __init__(self, kind, h, checkpoints, seed=0):
    rng = np.random.default_rng(seed)
    self.checkpoints = tuple(sorted(checkpoints))
    self.kind = kind
    mu_end = {k: rng.uniform(-0.2, 0.2, n) for k, n in _LEAVES.items()}
    self.noise = sum(np.mean(1 - m**2) for m in mu_end.values())
    change = self.noise / (h**2 if kind == "random_walk" else 4 * h**3)
    step = math.sqrt(change / len(_LEAVES))  # per coordinate and update
    end = self.checkpoints[-1]
    self.mean = {}
    if kind == "constant":
      self.change = 0.0
      self.mean = {t: mu_end for t in self.checkpoints}
    elif kind == "linear":
      v = {k: rng.choice([-1, 1], n) * step for k, n in _LEAVES.items()}
      self.change = _sketched_norm2(v)
      for t in self.checkpoints:
        self.mean[t] = {k: mu_end[k] - (end - t) * v[k] for k in _LEAVES}
    elif kind == "random_walk":
      self.change = change  # E |P (r_{t+1} - r_t)|^2
      mu = mu_end
      self.mean[end] = mu
      later_and_earlier = zip(
        self.checkpoints[:0:-1], self.checkpoints[-2::-1], strict=True
      )
      for later, t in later_and_earlier:
        walk = {
          k: rng.normal(size=n) * step * math.sqrt(later - t)
          for k, n in _LEAVES.items()
        }
        mu = {k: mu[k] - walk[k] for k in _LEAVES}
        self.mean[t] = mu
    else:
      raise ValueError(kind)
    self.moves = max(np.abs(m).max() for d in self.mean.values() for m in d.values())

  @property
  def h_star(self):
    """The rule's H* = (V / (4 D))^(1/3) (inf for no drift)."""
    return math.inf if self.change == 0 else (self.noise / (4 * self.change)) ** (1 / 3)

  @property
  def h_opt(self):
    """The optimal memory: H* for a linear drift, sqrt(V / D) for a walk."""
    if self.kind == "random_walk":
      return math.sqrt(self.noise / self.change)
    return self.h_star

  def probe_batch(self, num_probes):
    def batch(i):
      mu = self.mean[self.checkpoints[i // num_probes]]
      r = np.random.default_rng(10**6 + i)
      return {
        k: np.where(r.random(m.shape) < (1 + m) / 2, 1.0, -1.0).astype(np.float32)
        for k, m in mu.items()
      }

    return batch


def _design(h, reach=None):
  """Lags (L/5, L/2, L) reaching L = ``reach`` (default H^1.5, at least 10):
  a linear drift then moves D L^2 = V L^2 / (4 H^3) = V / 4 over L updates,
  twice the probe noise 2V/m of 16 probes."""
  largest = max(10, math.ceil(h**1.5 if reach is None else reach))
  return {"pilot_steps": largest + 1, "lags": (largest // 5, largest // 2, largest)}


_DEFAULT = {"pilot_steps": 200, "lags": (20, 50, 100)}


def select_on_stream(kind, h, design, change_estimate, num_probes=16, seed=0):
  """``(selection, stream)``: select_beta on the stream, grid=None."""
  checkpoints = [design["pilot_steps"] - n for n in design["lags"]]
  stream = Stream(kind, h, [*checkpoints, design["pilot_steps"]], seed)
  ones = {k: np.ones(n, np.float32) for k, n in _LEAVES.items()}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # design-limited cases
    sel = bo.select_beta(
      lambda beta: optax.sgd(1e-3),  # the parameters move; g does not care
      lambda p, b: b,
      lambda k: ones,
      _PARAMS,
      probe_batch=stream.probe_batch(num_probes),
      num_probes=num_probes,
      grid=None,
      beta_range=(0.0, 0.9999),
      change_estimate=change_estimate,
      seed=seed,
      **design,
    )
  return sel, stream


# --- A frozen model ---------------------------------------------------------


def _regression_batch(k):
  r = np.random.default_rng(k)
  x = r.normal(size=(32, 10)).astype(np.float32)
  return x, x @ np.linspace(-1, 1, 10).astype(np.float32) + r.normal(size=32)


def _regression_loss(p, b):
  return jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)


_REGRESSION_PARAMS = {"w": np.full(10, 0.1, np.float32), "b": np.float32(0.0)}


@pytest.mark.parametrize("change_estimate", ["published", "noise_corrected"])
@pytest.mark.parametrize(
  "lags, ceiling",
  [
    ((20, 50, 100), 27.14),
    ((10, 25, 50), 17.10),
    ((40, 100, 199), 42.95),
  ],
)
def test_a_frozen_model_is_never_a_measured_choice(lags, ceiling, change_estimate):
  """Learning rate 0: the parameters never move and nothing changes. The
  published D^ was then all probe noise and beta the design's ceiling
  (0.96838 / 0.94377 / 0.96838 for these lags), reported as measured."""
  with pytest.warns(RuntimeWarning, match="set by the probe design") as record:
    sel = bo.select_beta(
      lambda beta: bo.balanced_adam(0.0, beta),
      jax.grad(_regression_loss),
      _regression_batch,
      _REGRESSION_PARAMS,
      lags=lags,
      change_estimate=change_estimate,
    )
  assert "did not move" in str(record[-1].message)
  assert not sel.pilot_moved and sel.design_limited
  assert "did not move" in sel.design_reason
  # Nothing changes: the longest memory, as beta_from_noise_and_lag gives for
  # D = 0 < V, flagged as not measured.
  assert sel.change == 0.0 and sel.beta == 0.999
  # What the published estimator measured: the probe-noise term, at most
  # the ceiling (m L^2 / 8)^(1/3).
  np.testing.assert_allclose(sel.horizon_ceiling, ceiling, rtol=1e-3)
  assert sel.noise_share > 0.6
  published = sel.lag_intercept + sel.lag_slope / lags[-1] ** 2
  h = (sel.noise / (4 * published)) ** (1 / 3)
  assert 0.8 * ceiling < h < 1.25 * ceiling
  assert abs(sel.corrected_change) < 2 * sel.corrected_change_stderr


def test_a_training_model_is_a_measured_choice():
  """The same regression at learning rate 0.01 moves and is not frozen."""
  sel = bo.select_beta(
    lambda beta: bo.balanced_adam(1e-2, beta),
    jax.grad(_regression_loss),
    _regression_batch,
    _REGRESSION_PARAMS,
  )
  assert sel.pilot_moved and "did not move" not in sel.design_reason


# --- Streams of known noise and drift ---------------------------------------


@pytest.mark.parametrize("h_star", [5, 20, 100, 500])
@pytest.mark.parametrize("change_estimate", ["published", "noise_corrected"])
def test_linear_drift_with_lags_reaching_h_to_the_1_5(h_star, change_estimate):
  """Lags up to L = H*^1.5: both estimators within 25% of H* (the published
  one low by about (1 + 8 H^3 / (m L^2))^(1/3) = 1.5^(1/3), 13%; measured 9%),
  and measured."""
  sel, stream = select_on_stream("linear", h_star, _design(h_star), change_estimate)
  assert stream.moves < 1
  np.testing.assert_allclose(stream.h_star, h_star, rtol=0.1)
  assert abs(sel.horizon / stream.h_star - 1) < 0.25, (sel.horizon, stream.h_star)
  assert sel.pilot_moved and not sel.design_limited, sel.design_reason
  np.testing.assert_allclose(sel.noise, stream.noise, rtol=0.05)


def test_random_walk_with_lags_reaching_4_h_opt():
  """A walk of D per update has U_n = D n, so D~ = D sum n^3 / sum n^4 =
  1.07 D / L and H = (H_opt^2 L / 4.3)^(1/3): H_opt = sqrt(V / D) for lags
  reaching L = 4 H_opt. The published D^ adds 2V/(m L^2), over half of it."""
  corrected, stream = select_on_stream(
    "random_walk", 100, _design(100, reach=400), "noise_corrected"
  )
  assert stream.moves < 1
  np.testing.assert_allclose(stream.h_opt, 100, rtol=1e-12)
  assert abs(corrected.horizon / stream.h_opt - 1) < 0.25, corrected.horizon
  assert not corrected.design_limited, corrected.design_reason
  published, _ = select_on_stream(
    "random_walk", 100, _design(100, reach=400), "published"
  )
  assert published.horizon < 0.75 * stream.h_opt
  assert published.design_limited and published.noise_share > 0.5


@pytest.mark.parametrize("change_estimate", ["published", "noise_corrected"])
def test_a_constant_target_is_design_limited(change_estimate):
  sel, _ = select_on_stream("constant", 20, _DEFAULT, change_estimate)
  assert sel.pilot_moved and sel.design_limited
  assert "not resolved" in sel.design_reason
  assert abs(sel.corrected_change) < 2 * sel.corrected_change_stderr


def test_default_design_caps_the_published_estimator_not_the_corrected_one():
  """H* = 40 with the default lags: the published D^ = D + 2V/(m L^2) caps H
  below (m L^2 / 8)^(1/3) = 27.1 and is flagged (noise share > 1/2); the
  noise-corrected D~ resolves the drift and lands within 25%."""
  published, stream = select_on_stream("linear", 40, _DEFAULT, "published")
  corrected, _ = select_on_stream("linear", 40, _DEFAULT, "noise_corrected")
  assert published.horizon < published.horizon_ceiling < 27.2
  assert published.design_limited and published.noise_share > 0.5
  assert abs(corrected.horizon / stream.h_star - 1) < 0.25
  assert not corrected.design_limited, corrected.design_reason


def test_noise_corrected_answer_is_capped_at_its_resolution():
  """H* = 200 with the default lags is beyond what they resolve: the answer
  is the longest memory the measurement supports, D = 2 standard errors, and
  says so (a constant D would give the same)."""
  sel, _ = select_on_stream("linear", 200, _DEFAULT, "noise_corrected")
  assert sel.design_limited and "not resolved" in sel.design_reason
  np.testing.assert_allclose(sel.change, 2 * sel.corrected_change_stderr)
  assert 35 < sel.horizon < 80


def test_change_estimate_is_checked():
  with pytest.raises(ValueError, match="change_estimate must be one of"):
    bo.select_beta(
      lambda beta: optax.sgd(0.1),
      lambda p, b: b,
      lambda k: None,
      _PARAMS,
      change_estimate="corrected",
    )


# --- The table of docs/choosing_beta.md -------------------------------------


def _table(hs=(5, 10, 20, 50, 100, 200, 500), seeds=(0, 1, 2)):
  """Mean (min-max) H over the seeds, and how many were flagged design-limited."""
  designs = {
    "linear": {"default": lambda h: _DEFAULT, "L = H^1.5": _design},
    "random_walk": {
      "default": lambda h: _DEFAULT,
      "L = 4 H": lambda h: _design(h, reach=4 * h),
    },
    "constant": {"default": lambda h: _DEFAULT, "L = 1000": lambda h: _design(0, 1000)},
  }
  print(
    "| stream | lags | H_opt | rule's H* | published H, flagged |"
    " noise-corrected H, flagged |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  for kind, by_name in designs.items():
    for name, design_of in by_name.items():
      for h in hs if kind != "constant" else (math.inf,):
        design = design_of(h)
        checkpoints = [design["pilot_steps"] - n for n in design["lags"]]
        if Stream(kind, h, [*checkpoints, design["pilot_steps"]]).moves >= 1:
          continue  # The drift would leave [-1, 1] over these lags.
        cells = []
        for estimate in ("published", "noise_corrected"):
          runs = [select_on_stream(kind, h, design, estimate, seed=s) for s in seeds]
          found = [sel.horizon for sel, _ in runs]
          flags = sum(sel.design_limited for sel, _ in runs)
          spread = f"{min(found):.1f}-{max(found):.1f}"
          cells.append(f"{np.mean(found):.1f} ({spread}), {flags}/{len(seeds)}")
        stream = runs[0][1]
        print(
          f"| {kind} | {name}: {design['lags']} | {stream.h_opt:.1f} |"
          f" {stream.h_star:.1f} | {cells[0]} | {cells[1]} |"
        )


if __name__ == "__main__":
  _table()
