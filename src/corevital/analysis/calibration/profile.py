"""The calibration profile: a versioned JSON file of what healthy runs of one model look like.

Distributions are stored as summary statistics (:class:`MetricStats`), never as raw values:

- per generation-position bucket (steps ``[0, 4)``, ``[4, 16)``, ``[16, 64)``, ``[64, ∞)``): raw-logit
  entropy (bits), top-k margin, surprisal of the chosen token (bits), top-k mass;
- per layer: ``ln ‖h‖`` (the natural log of the hidden-state L2 norm at the generated position),
  the jump ``ln ‖h_ℓ‖ − ln ‖h_{ℓ−1}‖`` over the previous layer, and the normalised attention entropy.

A profile names the model it was made for (:class:`ModelIdentity`: architecture, shapes, a sample of
the weights, and the name for messages); :func:`load_calibration_profile` validates the file and
:meth:`CalibrationProfile.check_model` refuses a profile made for another model with a one-line
:class:`~corevital.errors.ConfigError`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corevital.analysis.calibration.risk_model import RiskModelSpec
from corevital.errors import ConfigError, validation_line

PROFILE_FORMAT = "corevital.calibration-profile"
PROFILE_VERSION = 1
POSITION_BUCKET_STARTS = (0, 4, 16, 64)
STEP_METRICS = ("entropy", "margin", "surprisal", "topk_mass")
# Profiles shipped in the package (``configs/calibration/``), by the name ``--calibration`` accepts.
SHIPPED_PROFILES = {"default": "smollm2-135m-instruct.json"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricStats(_Frozen):
    """Summary of one metric's healthy values: moments and quantiles (finite values only)."""

    count: int = Field(ge=1)
    mean: float
    std: float = Field(ge=0.0)
    min: float
    p05: float
    p25: float
    p50: float
    p75: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> MetricStats | None:
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return None
        q = np.percentile(vals, [5, 25, 50, 75, 95])
        return cls(
            count=int(vals.size),
            mean=float(vals.mean()),
            std=float(vals.std()),
            min=float(vals.min()),
            p05=float(q[0]),
            p25=float(q[1]),
            p50=float(q[2]),
            p75=float(q[3]),
            p95=float(q[4]),
            max=float(vals.max()),
        )

    @property
    def scale(self) -> float:
        """The z-score denominator: the standard deviation, floored so a constant metric stays finite."""
        return max(self.std, 1e-3 + 0.01 * abs(self.mean))


class ModelIdentity(_Frozen):
    """The model a profile was made for: what defines it (shapes, a sample of its weights) and its name.

    Two identities are the same model when their architecture and shapes agree and their weight
    samples agree within 1 % (:meth:`differs_from`); the name is only for messages, so the same
    weights loaded under another name (a local copy, the GGUF file loaded by the user) match.
    Profiles made before the sample existed have none, and are matched by name and shapes.
    """

    model_id: str
    architecture: str
    model_type: str
    num_layers: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    hidden_size: int | None = None
    vocab_size: int | None = None
    weights: list[float] | None = None  # corevital.capture.identity.weights_sample

    @classmethod
    def of(cls, loaded: Any) -> ModelIdentity:
        """The identity of a loaded model (:class:`corevital.capture.loading.LoadedModel`)."""
        caps = loaded.capabilities
        sample = list(loaded.weights_fingerprint)
        return cls(
            model_id=loaded.resolved.hf_id,
            architecture=caps.architecture,
            model_type=caps.model_type,
            num_layers=caps.num_layers,
            num_heads=caps.num_attention_heads,
            hidden_size=caps.hidden_size or None,
            vocab_size=caps.vocab_size or None,
            weights=sample or None,
        )

    def describe(self) -> str:
        return f"{self.model_id} ({self.architecture}, {self.num_layers} layers, {self.num_heads} heads)"

    def differs_from(self, other: ModelIdentity) -> str | None:
        """Why ``other`` is not this model, in a few words (None: the same model)."""
        shapes = ("architecture", "model_type", "num_layers", "num_heads", "hidden_size", "vocab_size")
        for name in shapes:
            ours, theirs = getattr(self, name), getattr(other, name)
            if ours is not None and theirs is not None and ours != theirs:
                return f"{name.replace('_', ' ')} {ours} vs {theirs}"
        if self.weights is not None and other.weights is not None:
            return None if _same_weights(self.weights, other.weights) else "different weights"
        if self.model_id != other.model_id:
            return "a different name (the profile holds no weight sample to compare)"
        return None


def _same_weights(a: list[float], b: list[float]) -> bool:
    """Equal length and every value within 1 % (+1e-4): float32, float16 and bfloat16 loads agree."""
    if len(a) != len(b) or not a:
        return False
    return all(abs(x - y) <= 1e-4 + 1e-2 * abs(x) for x, y in zip(a, b, strict=True))


class GenerationIdentity(_Frozen):
    """The decoding settings of the calibration runs (a profile describes runs made this way)."""

    do_sample: bool
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int

    def differences(self, other: GenerationIdentity) -> list[str]:
        """How ``other`` (this run's decoding) differs from the calibration runs', one phrase each."""
        out = []
        if self.do_sample != other.do_sample:
            out.append("sampled" if other.do_sample else "greedy")
        elif self.do_sample and (self.temperature, self.top_k, self.top_p) != (
            other.temperature,
            other.top_k,
            other.top_p,
        ):
            out.append(f"temperature/top-k/top-p {other.temperature}/{other.top_k}/{other.top_p}")
        if self.max_new_tokens != other.max_new_tokens:
            out.append(f"max_new_tokens {other.max_new_tokens}")
        return out

    def describe(self) -> str:
        how = f"sampled at temperature {self.temperature}" if self.do_sample else "greedy"
        return f"{how}, max_new_tokens {self.max_new_tokens}"


class PositionBucket(_Frozen):
    start: int = Field(ge=0)
    end: int | None = None  # exclusive; None = open
    entropy: MetricStats | None = None
    margin: MetricStats | None = None
    surprisal: MetricStats | None = None
    topk_mass: MetricStats | None = None

    def stats(self, metric: str) -> MetricStats | None:
        value: MetricStats | None = getattr(self, metric)
        return value


class LayerReference(_Frozen):
    layer: int = Field(ge=0)
    log_l2: MetricStats | None = None
    log_l2_jump: MetricStats | None = None
    attention_entropy: MetricStats | None = None
    # ln of the update ratio ||h_l - h_(l-1)|| / ||h_(l-1)||: per-run medians over steps
    log_update_ratio: MetricStats | None = None


class CalibrationProfile(_Frozen):
    format: Literal["corevital.calibration-profile"] = "corevital.calibration-profile"
    version: Literal[1] = 1
    created_at_utc: str
    corevital_version: str
    model: ModelIdentity
    generation: GenerationIdentity
    num_runs: int = Field(ge=1)
    num_steps: int = Field(ge=0)
    buckets: list[PositionBucket]
    layers: list[LayerReference]
    risk_model: RiskModelSpec | None = None

    def step_stats(self, metric: str, bucket: int) -> MetricStats | None:
        """A bucket's statistics; a bucket the calibration runs never reached borrows the last one reached."""
        for index in range(bucket, -1, -1):
            stats = self.buckets[index].stats(metric)
            if stats is not None:
                return stats
        return None

    def bucket_index(self, steps: np.ndarray) -> np.ndarray:
        """Which position bucket each step index falls in."""
        starts = np.asarray([b.start for b in self.buckets], dtype=np.int64)
        return np.clip(np.searchsorted(starts, np.asarray(steps), side="right") - 1, 0, len(starts) - 1)

    def check_model(self, model: ModelIdentity) -> None:
        """Refuse a profile made for another model (one line: which, and what differs)."""
        reason = self.model.differs_from(model)
        if reason is not None:
            raise ConfigError(
                f"calibration profile was made for {self.model.describe()}, not for {model.describe()} "
                f"({reason}); build one for this model with `corevital calibrate`"
            )

    def with_risk_model(self, spec: RiskModelSpec | None) -> CalibrationProfile:
        return self.model_copy(update={"risk_model": spec})


def resolve_profile_path(name: str) -> Path:
    """A profile file, or the package's own for a shipped name (``default``: the embedded model's)."""
    if name in SHIPPED_PROFILES:
        shipped = resources.files("corevital") / "configs" / "calibration" / SHIPPED_PROFILES[name]
        return Path(str(shipped))
    return Path(name)


def load_calibration_profile(path: str | Path) -> CalibrationProfile:
    """Read and validate a profile; every problem is a one-line ConfigError naming the file.

    A profile is immutable, so one read once is reused while the file is unchanged (same size and
    modification time): a monitor running many generations with one profile parses it once.
    """
    file = Path(path)
    try:
        stat, where = file.stat(), str(file.resolve())
    except OSError:
        return _read_profile(str(file), "", -1, -1)  # not cached: reading it reports the problem
    return _read_profile(str(file), where, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_profile(path: str, where: str, mtime_ns: int, size: int) -> CalibrationProfile:
    """The profile at ``path`` (the other arguments only key the cache); errors are never cached."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read calibration profile {file}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration profile {file} is not valid JSON (line {exc.lineno})") from exc
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ConfigError(f"{file} is not a CoreVital calibration profile (no format {PROFILE_FORMAT!r})")
    if data.get("version") != PROFILE_VERSION:
        raise ConfigError(
            f"calibration profile {file} has version {data.get('version')!r}; "
            f"this CoreVital reads version {PROFILE_VERSION}: rebuild it with `corevital calibrate`"
        )
    try:
        return CalibrationProfile.model_validate(data)
    except ValidationError as exc:
        problem = validation_line(exc, where_default="(document)")
        raise ConfigError(f"calibration profile {file} is invalid: {problem}") from exc


def save_calibration_profile(profile: CalibrationProfile, path: str | Path) -> Path:
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(profile.model_dump_json(indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write calibration profile {file}: {exc.strerror or exc}") from exc
    return file
