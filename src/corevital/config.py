"""Settings: one declaration for defaults, YAML, environment, CLI help and docs.

Precedence, highest first: explicit CLI flags (or library arguments) > ``COREVITAL_*``
environment variables > the ``--config`` YAML file > the defaults shipped inside the package
(``corevital/configs/default.yaml``). Each layer is a pydantic-settings source
(:func:`settings_sources`); a mapping setting (``thresholds``) is merged key by key across layers.
Unknown keys are errors wherever they come from: a key of a YAML file, an explicit argument, a
``COREVITAL_*`` variable that names no setting. YAML files are parsed (and the original CoreVital's
nested layout converted) by :mod:`corevital.config_files`.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from corevital.config_files import is_original_layout as is_original_layout  # re-exported
from corevital.config_files import yaml_mapping
from corevital.errors import ConfigError, validation_line
from corevital.modes import DEFAULT_TOPK, DEFAULT_TOPK_MASS_K, CaptureMode, EntropyMode

ENV_PREFIX = "COREVITAL_"
DEFAULT_MODEL_NAME = "default"

# Where reports go. Stores can be read back (runs, show, serve); exporters send to an
# observability system. A custom sink is named "package.module:Class" (docs/production.md).
STORE_SINKS = ("sqlite", "local", "postgres")
EXPORTER_SINKS = ("prometheus", "otel", "datadog", "wandb", "http")
SINK_NAMES = STORE_SINKS + EXPORTER_SINKS
SinkName = Literal["sqlite", "local", "postgres", "prometheus", "otel", "datadog", "wandb", "http"]
_CUSTOM_SINK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PerfMode = Literal["summary", "detailed", "strict"]


class Settings(BaseSettings):
    """Every setting of a CoreVital run. Field descriptions are the CLI help and the docs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    # --- model -----------------------------------------------------------------------------
    model: str = Field(
        DEFAULT_MODEL_NAME,
        description="Hugging Face model id or local directory; 'default' (or leaving it out) selects "
        "the embedded SmolLM2-135M-Instruct model.",
    )
    gguf_file: str | None = Field(
        None, description="GGUF file to load: a path, or a file name inside the --model directory/repo."
    )
    backend: Literal["transformers", "llama-cpp"] = Field(
        "transformers",
        description="What runs the model: transformers (every tier observed) or llama-cpp (a GGUF file "
        "through llama-cpp-python, the `llama-cpp` extra: the logit tier from full-vocabulary logits, "
        "attention and hidden states not observed).",
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit) on the Hub.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device: auto|cpu|cuda.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Weights dtype. auto: the model's own dtype on GPU (bf16 where the config says so), "
        "float32 on CPU.",
    )
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none", description="Load with bitsandbytes 4-bit or 8-bit quantization (CUDA only)."
    )
    tp_plan: Literal["none", "auto"] = Field(
        "none",
        description="Tensor parallelism: auto shards the model over the processes of "
        "`torchrun --nproc-per-node N` with transformers' tp_plan (NCCL on GPUs, gloo on CPUs); "
        "rank 0 writes the reports (docs/multi-gpu.md).",
    )
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Wrap prompts in the tokenizer's chat template. auto: on when the tokenizer has one.",
    )
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    cache_dir: str | None = Field(
        None,
        description="Where GGUF models are kept once converted to safetensors, so later loads take "
        "seconds: a directory (default $XDG_CACHE_HOME/corevital, else ~/.cache/corevital), or 'off'.",
    )

    # --- generation ------------------------------------------------------------------------
    max_new_tokens: int = Field(20, ge=1, description="Number of tokens to generate.")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature; 0 means greedy decoding.")
    top_k: int = Field(50, ge=0, description="Top-k sampling (0 disables it).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Top-p (nucleus) sampling.")
    num_beams: int = Field(1, ge=1, description="Beam search width; > 1 enables beam search.")
    early_stopping: bool = Field(False, description="Beam search: stop when num_beams candidates finish.")
    seed: int = Field(
        42, ge=0, le=2**63 - 1, description="Random seed; the same seed gives the same sampled tokens."
    )
    ignore_eos: bool = Field(
        False, description="Generate exactly max_new_tokens, past end-of-sequence tokens (benchmarks)."
    )
    generation_config: Literal["corevital", "model"] = Field(
        "corevital",
        description="Whose decoding defaults: corevital (temperature, top_k, top_p, num_beams and "
        "early_stopping above) or model (the model's own generation_config.json; max_new_tokens and "
        "seed still apply).",
    )

    # --- capture ---------------------------------------------------------------------------
    capture: CaptureMode = Field(
        "full",
        description="Capture mode: full (per-layer detail), summary (logits timeline only; per-layer "
        "attention work is skipped), on_risk (summary, full detail kept when risk is high).",
    )
    attention_path: Literal["fast", "eager"] = Field(
        "fast",
        description="How attention is observed: fast (the model keeps SDPA; only the observed rows are "
        "recomputed) or eager (the model's eager attention, the reference). Unsupported models use eager.",
    )
    cache: Literal["auto", "dynamic", "static"] = Field(
        "auto",
        description="Key/value cache of generate(): auto (the model's own choice, from its generation "
        "config), dynamic (grows step by step) or static (preallocated, sliding-window layers get a "
        "windowed one; on a GPU transformers then compiles the forward; CoreVital's generations of a "
        "model reuse one static cache, reset each time, so the compiled CUDA graph is recorded once).",
    )
    entropy_mode: EntropyMode = Field(
        "full", description="Logit entropy: full (exact) or topk_approx (top tokens plus a uniform tail)."
    )
    topk: int = Field(DEFAULT_TOPK, ge=1, le=100, description="Number of most likely tokens listed per step.")
    topk_mass_k: int = Field(
        DEFAULT_TOPK_MASS_K, ge=1, le=1000, description="K of the top-K probability mass (topk_mass)."
    )
    hidden_clip_value: float = Field(
        1e6, gt=0.0, description="Hidden-state values beyond +/- this are clamped before statistics."
    )
    sketch_dim: int = Field(
        32, ge=0, le=256, description="Width of the random-projection sketch of hidden states (0: none)."
    )
    prompt_telemetry: bool = Field(
        True, description="Analyse the prompt (surprisals, layer transformations, sparse attention)."
    )
    sparse_threshold: float = Field(
        0.01, gt=0.0, lt=1.0, description="Prompt telemetry: keep attention weights above this."
    )
    sparse_max_per_head: int = Field(
        50, ge=1, description="Prompt telemetry: at most this many attention entries kept per head."
    )
    on_risk_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="on_risk capture: keep per-layer detail at or above this risk."
    )
    thresholds: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the model profile's thresholds, by dotted name "
        "(e.g. {'repetition.min_span': 16, 'high_entropy_threshold_bits': 5.0}).",
    )
    batch_size: int = Field(
        8, ge=1, description="Prompts per generate() call when several prompts are given."
    )

    # --- output ----------------------------------------------------------------------------
    sink: list[str] = Field(
        default_factory=lambda: ["sqlite"],
        description="Where reports go; repeat for several (--sink sqlite --sink prometheus). Stores: "
        "sqlite (default), local (JSON files), postgres (--db URL). Exporters: prometheus, otel, datadog, "
        "wandb, http. A custom sink: package.module:Class.",
    )
    out: str = Field("runs", description="Output directory; the SQLite database is <out>/corevital.db.")
    db: str | None = Field(
        None,
        description="The store's database: a SQLite file (default <out>/corevital.db) or, with --sink "
        "postgres, a postgresql:// URL.",
    )
    write_json: bool = Field(False, description="With the sqlite sink, also write a JSON file per report.")
    json_pretty: bool = Field(False, description="Indent JSON files (larger).")

    # --- sampling ----------------------------------------------------------------------------
    sample_every: int = Field(1, ge=1, description="Keep every Nth run (1: every run).")
    sample_rate: float = Field(
        1.0, gt=0.0, le=1.0, description="Keep this random fraction of runs (1: every run); see sample_seed."
    )
    sample_seed: int | None = Field(None, description="Seed of the random sampling (none: not reproducible).")
    sample_min_risk: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Keep only runs at or above this risk score (every run is still analysed).",
    )

    # --- exporters ---------------------------------------------------------------------------
    prometheus_textfile: str | None = Field(
        None,
        description="--sink prometheus: write the metrics to this .prom file (node_exporter's textfile "
        "collector).",
    )
    prometheus_pushgateway: str | None = Field(
        None, description="--sink prometheus: push the metrics to this Pushgateway URL after the run."
    )
    prometheus_job: str = Field("corevital", description="--sink prometheus: the Pushgateway job name.")
    otel_endpoint: str | None = Field(
        None,
        description="--sink otel: the OTLP/HTTP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT, else "
        "http://localhost:4318).",
    )
    otel_service_name: str = Field(
        "corevital", description="--sink otel: the service.name resource attribute."
    )
    datadog_site: str = Field(
        "datadoghq.com",
        description="--sink datadog: the Datadog site (datadoghq.com, datadoghq.eu, us5.datadoghq.com, "
        "...) or an https:// API URL. The API key comes from DD_API_KEY or --datadog-api-key-file.",
    )
    datadog_api_key_file: str | None = Field(
        None, description="--sink datadog: a file holding the API key (instead of DD_API_KEY)."
    )
    datadog_event_risk: float = Field(
        0.7, ge=0.0, le=1.0, description="--sink datadog: send an event for runs at or above this risk."
    )
    wandb_project: str = Field("corevital", description="--sink wandb: the Weights & Biases project.")
    wandb_mode: Literal["online", "offline"] = Field(
        "online", description="--sink wandb: online, or offline (files under <out>/wandb, synced later)."
    )
    http_url: str | None = Field(None, description="--sink http: POST each report (gzip JSON) to this URL.")
    http_spool: str | None = Field(
        None,
        description="--sink http: the directory of reports not delivered yet (default <out>/http-spool).",
    )
    http_timeout: float = Field(10.0, gt=0.0, description="--sink http: seconds per request.")

    # --- diagnostics -------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Logging level; DEBUG also shows tracebacks and checks metric consistency."
    )
    validate_metrics: bool = Field(
        False, description="Check information-theoretic invariants of every step (also on with DEBUG)."
    )
    perf: PerfMode | None = Field(
        None, description="Performance monitoring: summary, detailed or strict (warm-up and baseline)."
    )
    calibration: str | None = Field(
        None,
        description=(
            "Calibration profile JSON from `corevital calibrate` (divergence scoring, per-layer reference "
            "levels, and a labelled risk model if it has one), or `default` for the profile shipped for "
            "the embedded default model."
        ),
    )
    rag_context: str | None = Field(None, description="JSON file with RAG context metadata.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments > ``COREVITAL_*`` > packaged defaults (no .env file, no secrets directory).

        :func:`load_settings` adds the ``--config`` file between the environment and the defaults.
        """
        return settings_sources(settings_cls, init_settings)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``max_new_tokens: true`` is a mistake, not 1: a number setting takes no true/false."""
        if isinstance(value, bool) and info.field_name in _NUMBER_SETTINGS:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value

    @field_validator("sink", mode="before")
    @classmethod
    def _sink_list(cls, value: Any) -> Any:
        """One name, a comma-separated list (the environment) or a list; names checked, duplicates dropped."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        names = [str(v) for v in value]
        for name in names:
            if name not in SINK_NAMES and not _CUSTOM_SINK.match(name):
                raise ValueError(
                    f"unknown sink {name!r} (one of {', '.join(SINK_NAMES)}, or package.module:Class)"
                )
        if not names:
            raise ValueError("at least one sink is needed")
        return list(dict.fromkeys(names))

    @property
    def stores(self) -> list[str]:
        """The sinks that store reports to read back (sqlite, local, postgres), in the order given."""
        return [name for name in self.sink if name in STORE_SINKS]

    @property
    def sampling(self) -> bool:
        """Whether a sampling setting keeps fewer than every run."""
        return self.sample_every > 1 or self.sample_rate < 1.0 or self.sample_min_risk is not None

    @property
    def do_sample(self) -> bool:
        """Sampling is on unless temperature is 0 (greedy), as users of other LLM tools expect."""
        return self.temperature > 0.0


def _is_number(annotation: Any) -> bool:
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return any(member in (int, float) for member in members)


_NUMBER_SETTINGS = frozenset(
    name for name, info in Settings.model_fields.items() if _is_number(info.annotation)
)


def read_default_yaml() -> dict[str, Any]:
    """The packaged default.yaml's settings (a copy: the caller may change it)."""
    return copy.deepcopy(_packaged_defaults())


@functools.cache
def _packaged_defaults() -> dict[str, Any]:
    """Parsed once per process: PyYAML takes ~20 ms, which every ``load_settings`` call paid."""
    text = resources.files("corevital").joinpath("configs/default.yaml").read_text(encoding="utf-8")
    return yaml_mapping(text, "the packaged default.yaml", Settings.model_fields)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``--config`` file's settings; the original CoreVital's nested layout is read too."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {p} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    if b"\x00" in data:
        raise ConfigError(f"config file {p} is not text: a NUL byte at offset {data.index(0)}")
    return yaml_mapping(text, str(p), Settings.model_fields, original_layout=True)


class EnvironmentSource(EnvSettingsSource):
    """``COREVITAL_<NAME>`` variables of ``environ`` (the process environment when None).

    Names are case-insensitive; a ``COREVITAL_*`` variable that names no setting is a
    :class:`ConfigError`. Values are parsed as pydantic-settings parses the environment (JSON for
    mappings such as ``thresholds``).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        super().__init__(settings_cls, case_sensitive=False, env_prefix=ENV_PREFIX)

    def prepare_field_value(self, field_name: str, field: Any, value: Any, value_is_complex: bool) -> Any:
        """A list setting may be given as plain comma-separated text (``COREVITAL_SINK=sqlite,http``);
        a mapping or list that is not valid JSON is a one-line ConfigError."""
        if field_name == "sink" and isinstance(value, str) and not value.lstrip().startswith("["):
            return value
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            raise ConfigError(
                f"invalid setting in the environment: {ENV_PREFIX}{field_name.upper()} is not valid JSON"
            ) from exc

    def _load_env_vars(self) -> Mapping[str, str | None]:
        names = set(Settings.model_fields)
        for key in sorted(self.environ):
            upper = key.upper()
            named = upper.removeprefix(ENV_PREFIX).lower()
            if upper.startswith(ENV_PREFIX) and named not in names:
                raise ConfigError(f"unknown setting in the environment: {key} (see docs/configuration.md)")
        return {key.lower(): value for key, value in self.environ.items()}


class YamlSource(InitSettingsSource):
    """The settings of one YAML mapping (a ``--config`` file or the packaged defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls, init_kwargs=values)


def settings_sources(
    settings_cls: type[BaseSettings],
    arguments: PydanticBaseSettingsSource,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The layers, highest first: arguments, environment, the config file (if any), packaged defaults."""
    sources: list[PydanticBaseSettingsSource] = [arguments, EnvironmentSource(settings_cls, environ)]
    if config_file is not None:
        sources.append(YamlSource(settings_cls, read_config_file(config_file)))
    sources.append(YamlSource(settings_cls, read_default_yaml()))
    return tuple(sources)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge all layers and validate them into one :class:`Settings`.

    ``overrides`` are explicit values (CLI flags the user typed, library arguments); ``None``
    values in it mean "not given" and do not override lower layers. ``environ`` replaces the
    process environment (tests, embedding).
    """
    explicit = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(explicit) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    sources = settings_sources(
        Settings, InitSettingsSource(Settings, explicit), config_file=config_file, environ=environ
    )
    try:
        return Settings(_build_sources=(sources, explicit))
    except ValidationError as exc:
        raise ConfigError("invalid setting " + validation_line(exc, where_default="settings")) from exc
