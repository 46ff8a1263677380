"""Hyperparameter laws as data: AdamW timescale, optimal weight decay and batch size.

Each published law is a frozen :class:`HyperparamLaw` ``y = c * prod_i x_i^a_i`` that
carries its units, the range of inputs it was fitted on, its source (arXiv id) and
whether its constants are verified against the paper (``verified=False`` for constants
that reached us second-hand; docs/methods.md marks them UNVERIFIED). Calling a law checks
every input's unit and range and raises naming the bad value.

Laws:
  * ``ADAMW_TIMESCALE``: ``tau = B / (lr wd D)``, the fraction of training that AdamW's
    weight EMA spans (Wang & Aitchison arXiv 2405.13698; Power Lines arXiv 2505.13738).
  * ``POWER_LINES_TAU_OPT``: ``tau_opt = 1.084 TPP^-0.527`` (arXiv 2505.13738). UNVERIFIED.
  * ``POWER_LINES_B_OPT``: ``B_opt = 0.0306 D^0.383`` in 2048-token sequences. UNVERIFIED.
  * ``POWER_LINES_B_CRIT``: ``B_crit ~ D^0.465`` (0.46..0.47), no published coefficient:
    usable only as a ratio (:func:`scale_critical_batch`). UNVERIFIED.
  * ``KAPLAN_B_CRIT``: ``B_crit(L) = 2e8 tokens * L^(-1/0.21)``, L in nats (Kaplan et al.
    arXiv 2001.08361, building on McCandlish et al. arXiv 1812.06162). UNVERIFIED.
  * ``KAPLAN_LR``: ``lr(N) = 0.003239 - 0.0001395 ln N`` (arXiv 2001.08361). UNVERIFIED.

Quantities are plain floats in the law's unit, or :class:`Quantity` values that carry
their unit; tokens and sequences convert only when the sequence length is known.
"""

from __future__ import annotations

import dataclasses
import math

TOKENS, SEQUENCES, PARAMS, STEPS, NATS = "tokens", "sequences", "params", "steps", "nats"
UNITLESS = "1"
UNITS = (TOKENS, SEQUENCES, PARAMS, STEPS, NATS, UNITLESS, "tokens/param", "1/step")
POWER_LINES_SEQ_LEN = 2048  # Power Lines counts the batch in sequences of 2048 tokens


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A number with its unit, e.g. ``Quantity(256, "sequences", seq_len=2048)``.

    ``seq_len`` (tokens per sequence) lets sequences convert to tokens and back.
    """

    value: float
    unit: str
    seq_len: int | None = None

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unknown unit {self.unit!r}; valid: {UNITS}")

    def to(self, unit: str, name: str = "quantity") -> float:
        """The value in ``unit``; raises for units that do not convert."""
        if unit == self.unit:
            return float(self.value)
        pair = (self.unit, unit)
        if pair in ((SEQUENCES, TOKENS), (TOKENS, SEQUENCES)):
            if self.seq_len is None:
                raise ValueError(f"{name}={self.value} {self.unit} needs seq_len to convert to "
                                 f"{unit}: Quantity({self.value}, {self.unit!r}, seq_len=...)")
            factor = self.seq_len if pair[0] == SEQUENCES else 1.0 / self.seq_len
            return float(self.value) * factor
        raise ValueError(f"{name} is in {self.unit!r} but must be in {unit!r}: "
                         f"inconsistent units")


Number = float | int | Quantity


def as_unit(x: Number, unit: str, name: str) -> float:
    """``x`` in ``unit``: a plain number is taken to be in ``unit`` already."""
    value = x.to(unit, name) if isinstance(x, Quantity) else float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Input:
    """One input of a law: its name, unit and the range the law was fitted on."""

    name: str
    unit: str
    exponent: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class HyperparamLaw:
    """``output = coefficient * prod(x_i ** exponent_i)`` with units, range and source.

    Attributes:
      name: short identifier.
      output: what the law gives, e.g. ``"tau_opt"``.
      output_unit: unit of the output.
      coefficient: the prefactor; None where only the exponents are known (use ratios).
      inputs: the :class:`Input` variables, in call order.
      source: arXiv id of the paper.
      verified: False where the constants are second-hand (docs/methods.md: UNVERIFIED).
      note: provenance and caveats.
    """

    name: str
    output: str
    output_unit: str
    coefficient: float | None
    inputs: tuple[Input, ...]
    source: str
    verified: bool
    note: str = ""

    def _value(self, inp: Input, x: Number, allow_extrapolation: bool) -> float:
        v = as_unit(x, inp.unit, f"{self.name}: {inp.name}")
        if v <= 0:
            raise ValueError(f"{self.name}: {inp.name} must be > 0, got {v}")
        if not allow_extrapolation and not inp.low <= v <= inp.high:
            raise ValueError(
                f"{self.name}: {inp.name}={v:.4g} {inp.unit} is outside the fitted range "
                f"[{inp.low:.4g}, {inp.high:.4g}]; pass allow_extrapolation=True to extrapolate")
        return v

    def __call__(self, *args: Number, allow_extrapolation: bool = False, **kwargs: Number) -> float:
        """The output for inputs given by position or by name (in their units)."""
        values = dict(zip([i.name for i in self.inputs], args))
        if len(args) > len(self.inputs) or set(values) & set(kwargs):
            raise TypeError(f"{self.name} takes {[i.name for i in self.inputs]}, got "
                            f"{len(args)} positional and {sorted(kwargs)}")
        values.update(kwargs)
        missing = [i.name for i in self.inputs if i.name not in values]
        unknown = set(values) - {i.name for i in self.inputs}
        if missing or unknown:
            raise TypeError(f"{self.name}: missing {missing}, unknown {sorted(unknown)}; "
                            f"inputs: {[i.name for i in self.inputs]}")
        if self.coefficient is None:
            raise ValueError(f"{self.name} has no known coefficient ({self.note}); use it as a "
                             f"ratio, e.g. scale_critical_batch")
        out = self.coefficient
        for inp in self.inputs:
            out *= self._value(inp, values[inp.name], allow_extrapolation) ** inp.exponent
        return out

    def ratio(self, new: Number, old: Number, allow_extrapolation: bool = False) -> float:
        """``law(new) / law(old)`` for a one-input law (needs no coefficient)."""
        if len(self.inputs) != 1:
            raise ValueError(f"{self.name}.ratio needs a one-input law")
        inp = self.inputs[0]
        a = self._value(inp, new, allow_extrapolation)
        b = self._value(inp, old, allow_extrapolation)
        return (a / b) ** inp.exponent


_INF = math.inf

ADAMW_TIMESCALE = HyperparamLaw(
    name="adamw_timescale", output="tau", output_unit=UNITLESS, coefficient=1.0,
    inputs=(Input("batch_tokens", TOKENS, 1.0, 1.0, _INF),
            Input("lr", UNITLESS, -1.0, 0.0, _INF),
            Input("wd", UNITLESS, -1.0, 0.0, _INF),
            Input("total_tokens", TOKENS, -1.0, 1.0, _INF)),
    source="arXiv:2405.13698", verified=True,
    note="tau_iter = 1 / (lr wd) steps, S = D / B steps; tau = tau_iter / S. A definition, "
         "not a fit; optax AdamW multiplies wd by the scheduled lr, so use the peak lr.")

POWER_LINES_TAU_OPT = HyperparamLaw(
    name="power_lines_tau_opt", output="tau_opt", output_unit=UNITLESS, coefficient=1.084,
    inputs=(Input("tpp", "tokens/param", -0.527, 1.0, 1e4),),
    source="arXiv:2505.13738", verified=False,
    note="UNVERIFIED (secondary quote); R^2 0.975; GPT-2-like 111M-3.3B, SlimPajama, muP, "
         "AdamW, linear decay to 0. Fitted TPP range not confirmed: [1, 1e4] assumed.")

POWER_LINES_B_OPT = HyperparamLaw(
    name="power_lines_b_opt", output="B_opt", output_unit=SEQUENCES, coefficient=0.0306,
    inputs=(Input("total_tokens", TOKENS, 0.383, 1e7, 1e12),),
    source="arXiv:2505.13738", verified=False,
    note="UNVERIFIED (secondary quote); B in sequences of 2048 tokens, D in tokens; "
         "D range [1e7, 1e12] assumed.")

POWER_LINES_B_CRIT = HyperparamLaw(
    name="power_lines_b_crit", output="B_crit", output_unit=TOKENS, coefficient=None,
    inputs=(Input("total_tokens", TOKENS, 0.465, 1e7, 1e12),),
    source="arXiv:2505.13738", verified=False,
    note="UNVERIFIED: exponent quoted as 0.46..0.47 (midpoint used), no coefficient, no "
         "dependence on N.")

KAPLAN_B_CRIT = HyperparamLaw(
    name="kaplan_b_crit", output="B_crit", output_unit=TOKENS, coefficient=2e8,
    inputs=(Input("loss", NATS, -1.0 / 0.21, 1.5, 8.0),),
    source="arXiv:2001.08361", verified=False,
    note="UNVERIFIED (from memory of eq. 5.3, unchecked; docs/methods.md, Batch size and "
         "critical batch): B_crit(L) = B* / "
         "L^(1/alpha_B), B* ~ 2e8 tokens, alpha_B ~ 0.21, L in nats/token on WebText2; the "
         "McCandlish et al. (arXiv 1812.06162) critical batch.")


@dataclasses.dataclass(frozen=True)
class LogLinearLaw:
    """``output = intercept + slope * ln(x)`` with unit, range and source (Kaplan's lr rule)."""

    name: str
    output: str
    intercept: float
    slope: float
    input: Input
    source: str
    verified: bool
    note: str = ""

    def __call__(self, x: Number, allow_extrapolation: bool = False) -> float:
        v = as_unit(x, self.input.unit, f"{self.name}: {self.input.name}")
        if not allow_extrapolation and not self.input.low <= v <= self.input.high:
            raise ValueError(
                f"{self.name}: {self.input.name}={v:.4g} {self.input.unit} is outside the fitted "
                f"range [{self.input.low:.4g}, {self.input.high:.4g}]")
        if v <= 0:
            raise ValueError(f"{self.name}: {self.input.name} must be > 0, got {v}")
        out = self.intercept + self.slope * math.log(v)
        if out <= 0:
            raise ValueError(f"{self.name} gives {out:.3g} <= 0 at {self.input.name}={v:.4g}")
        return out


KAPLAN_LR = LogLinearLaw(
    name="kaplan_lr", output="lr", intercept=0.003239, slope=-0.0001395,
    input=Input("non_embedding_params", PARAMS, 1.0, 768.0, 1.5e9),
    source="arXiv:2001.08361", verified=False,
    note="UNVERIFIED (from memory of Kaplan et al. appendix D.6, unchecked; docs/methods.md, "
         "Batch size and critical batch): Adam, "
         "3000-step warmup, cosine to 0; ln is the natural log; N non-embedding params.")

LAWS = {law.name: law for law in (ADAMW_TIMESCALE, POWER_LINES_TAU_OPT, POWER_LINES_B_OPT,
                                  POWER_LINES_B_CRIT, KAPLAN_B_CRIT, KAPLAN_LR)}


def _positive(name: str, v: float) -> float:
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _batch_and_data(batch_tokens: Number, total_tokens: Number) -> tuple[float, float]:
    b = _positive("batch_tokens", as_unit(batch_tokens, TOKENS, "batch_tokens"))
    d = _positive("total_tokens", as_unit(total_tokens, TOKENS, "total_tokens"))
    if b > d:
        raise ValueError(f"batch_tokens={b:.4g} exceeds total_tokens={d:.4g}: a run of less than "
                         f"one step; are B and D in the same unit (tokens)?")
    return b, d


def adamw_timescale(lr: float, wd: float, batch_tokens: Number, total_tokens: Number) -> float:
    """``tau = B / (lr wd D)``: AdamW's weight-EMA timescale as a fraction of training.

    ``tau_iter = 1 / (lr wd)`` steps over ``S = D / B`` steps (arXiv 2405.13698,
    2505.13738). ``batch_tokens`` B and ``total_tokens`` D in tokens (or Quantity).
    """
    b, d = _batch_and_data(batch_tokens, total_tokens)
    return ADAMW_TIMESCALE(b, _positive("lr", lr), _positive("wd", wd), d)


def weight_decay_for_timescale(tau: float, lr: float, batch_tokens: Number,
                               total_tokens: Number) -> float:
    """The AdamW weight decay that gives timescale ``tau``: ``wd = B / (lr D tau)``."""
    b, d = _batch_and_data(batch_tokens, total_tokens)
    return b / (_positive("lr", lr) * d * _positive("tau", tau))


def optimal_timescale(n_params: Number, total_tokens: Number,
                      allow_extrapolation: bool = False) -> float:
    """Power Lines ``tau_opt = 1.084 (D / N)^-0.527`` (arXiv 2505.13738, UNVERIFIED)."""
    n = _positive("n_params", as_unit(n_params, PARAMS, "n_params"))
    d = _positive("total_tokens", as_unit(total_tokens, TOKENS, "total_tokens"))
    return POWER_LINES_TAU_OPT(d / n, allow_extrapolation=allow_extrapolation)


def optimal_weight_decay(n_params: Number, total_tokens: Number, batch_tokens: Number,
                         lr: float, allow_extrapolation: bool = False) -> float:
    """``wd_opt = B / (lr D tau_opt(D / N))`` (Power Lines arXiv 2505.13738, UNVERIFIED).

    Args:
      n_params: model parameters N (params).
      total_tokens: training tokens D.
      batch_tokens: tokens per step B.
      lr: peak learning rate (optax AdamW multiplies wd by the scheduled lr).
      allow_extrapolation: allow TPP outside the law's range.
    """
    tau = optimal_timescale(n_params, total_tokens, allow_extrapolation)
    return weight_decay_for_timescale(tau, lr, batch_tokens, total_tokens)


def optimal_batch_size(total_tokens: Number, allow_extrapolation: bool = False) -> float:
    """Power Lines ``B_opt = 0.0306 D^0.383`` sequences of 2048 tokens, returned in tokens
    (arXiv 2505.13738, UNVERIFIED). D = 1e8 tokens gives about 73K tokens."""
    d = as_unit(total_tokens, TOKENS, "total_tokens")
    return POWER_LINES_B_OPT(d, allow_extrapolation=allow_extrapolation) * POWER_LINES_SEQ_LEN


def scale_critical_batch(b_crit_ref: Number, tokens_ref: Number, total_tokens: Number,
                         allow_extrapolation: bool = False) -> float:
    """``B_crit(D) = B_crit(D_ref) (D / D_ref)^0.465`` in tokens: the Power Lines exponent
    applied to a measured reference (arXiv 2505.13738, UNVERIFIED)."""
    b = _positive("b_crit_ref", as_unit(b_crit_ref, TOKENS, "b_crit_ref"))
    return b * POWER_LINES_B_CRIT.ratio(as_unit(total_tokens, TOKENS, "total_tokens"),
                                        as_unit(tokens_ref, TOKENS, "tokens_ref"),
                                        allow_extrapolation)


def steps_for_batch(batch_tokens: Number, min_steps: float, b_crit: Number) -> float:
    """McCandlish et al. (arXiv 1812.06162): steps to a target loss at batch B,
    ``S = S_min (1 + B_crit / B)`` (from ``(S / S_min - 1)(D / D_min - 1) = 1``)."""
    b = _positive("batch_tokens", as_unit(batch_tokens, TOKENS, "batch_tokens"))
    bc = _positive("b_crit", as_unit(b_crit, TOKENS, "b_crit"))
    return _positive("min_steps", min_steps) * (1.0 + bc / b)
