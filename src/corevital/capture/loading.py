"""Loading a model and its tokenizer: Hub id, local directory, GGUF file, or the embedded default.

Errors a user can cause (unknown id, missing path, unreadable GGUF, CUDA or quantization without
CUDA) become one-line :mod:`corevital.errors` exceptions; nothing falls back silently.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corevital.capture.capabilities import ModelCapabilities, capabilities_from_config
from corevital.capture.default_model import locate_default_model
from corevital.capture.gguf_once import parsed_once
from corevital.capture.hf_compat import check_transformers, config_revision, gguf_bar_follows_progress_switch
from corevital.capture.model_checks import probe_capabilities
from corevital.capture.model_files import MODEL_FILE_ERRORS, TOKENIZER_FILE_ERRORS, check_model_files
from corevital.config import DEFAULT_MODEL_NAME, Settings
from corevital.errors import DeviceError, ModelLoadError
from corevital.modes import ModelSource

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that identifies one loaded model; equal specs can share a loaded model."""

    model: str = DEFAULT_MODEL_NAME
    gguf_file: str | None = None
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"
    trust_remote_code: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSpec:
        return cls(
            model=settings.model or DEFAULT_MODEL_NAME,
            gguf_file=settings.gguf_file,
            revision=settings.revision,
            device=settings.device,
            dtype=settings.dtype,
            quantize=settings.quantize,
            trust_remote_code=settings.trust_remote_code,
        )


@dataclass(frozen=True)
class ResolvedSource:
    location: str  # what from_pretrained receives: a Hub id or a directory
    gguf_file: str | None
    hf_id: str  # the name written into reports
    source: ModelSource
    is_default: bool


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    capabilities: ModelCapabilities
    spec: ModelSpec
    resolved: ResolvedSource
    device: torch.device
    dtype: torch.dtype
    quantization: str | None  # "4-bit", "8-bit" or None
    revision: str | None

    @property
    def dtype_name(self) -> str:
        if self.quantization is not None:
            return "quantized_unknown"
        return str(self.dtype).removeprefix("torch.")


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was requested (--device cuda) but no CUDA device is available on this machine"
        )
    if requested not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {requested!r}: use auto, cpu or cuda")
    return torch.device(requested)


def resolve_source(spec: ModelSpec) -> ResolvedSource:
    if spec.model in ("", DEFAULT_MODEL_NAME) and spec.gguf_file is None:
        default = locate_default_model()
        return ResolvedSource(str(default.directory), default.gguf_file, default.hf_id, "gguf", True)
    gguf = spec.gguf_file
    if gguf is not None and Path(gguf).is_file():
        path = Path(gguf).resolve()
        hf_id = spec.model if spec.model not in ("", DEFAULT_MODEL_NAME) else path.name
        return ResolvedSource(str(path.parent), path.name, hf_id, "gguf", False)
    if gguf is not None and Path(gguf).suffix == ".gguf" and ("/" in gguf or spec.model in ("", "default")):
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    model = spec.model
    looks_like_path = model.startswith((".", "/", "~")) or Path(model).exists()
    if looks_like_path:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model directory not found: {model}")
        if gguf is not None and not (path / gguf).is_file():
            raise ModelLoadError(f"GGUF file {gguf} not found in {path}")
        source: ModelSource = "gguf" if gguf else "local"
        return ResolvedSource(str(path.resolve()), gguf, model, source, False)
    return ResolvedSource(model, gguf, model, "gguf" if gguf else "hub", False)


def _load_error(what: str, resolved: ResolvedSource, exc: BaseException) -> ModelLoadError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if resolved.source == "hub" and isinstance(exc, OSError):
        return ModelLoadError(
            f"model {resolved.hf_id!r} not found: it is not a local directory and could not be loaded "
            f"from the Hugging Face Hub ({reason})"
        )
    target = f"{resolved.location}/{resolved.gguf_file}" if resolved.gguf_file else resolved.location
    return ModelLoadError(f"cannot load {what} from {target}: {reason}")


def _choose_dtype(spec: ModelSpec, config: Any, device: torch.device) -> torch.dtype:
    if spec.dtype != "auto":
        return _DTYPES[spec.dtype]
    if device.type != "cuda":
        return torch.float32
    own = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(own, str):
        own = _DTYPES.get(own)
    return own if isinstance(own, torch.dtype) and own in _DTYPES.values() else torch.float32


def _quantization_config(spec: ModelSpec, device: torch.device) -> tuple[Any, str | None]:
    if spec.quantize == "none":
        return None, None
    label = "4-bit" if spec.quantize == "4bit" else "8-bit"
    if device.type != "cuda":
        raise DeviceError(
            f"{label} quantization needs a CUDA device (bitsandbytes); this run is on {device.type}"
        )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise DeviceError(
            f"{label} quantization needs bitsandbytes: pip install 'corevital[quantization]'"
        ) from exc
    if spec.quantize == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    return config, label


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load, move to the device, probe; raise a one-line CoreVitalError on any user-caused failure."""
    check_transformers()
    device = resolve_device(spec.device)
    quant_config, quant_label = _quantization_config(spec, device)
    resolved = resolve_source(spec)
    common: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        common["revision"] = spec.revision
    if resolved.gguf_file:
        common["gguf_file"] = resolved.gguf_file
    check_model_files(resolved.location, resolved.gguf_file)
    with parsed_once() if resolved.gguf_file else nullcontext(), gguf_bar_follows_progress_switch():
        config, tokenizer, model, dtype = _load_parts(spec, resolved, common, device, quant_config)
    if quant_config is None:
        model.to(device)
    model.eval()
    _prepare_tokenizer(tokenizer, model)
    caps = probe_capabilities(model, capabilities_from_config(model.config, model_class=type(model).__name__))
    log.debug("capabilities of %s: %s", resolved.hf_id, caps)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        capabilities=caps,
        spec=spec,
        resolved=resolved,
        device=device,
        dtype=dtype,
        quantization=quant_label,
        revision=spec.revision or config_revision(config),
    )


def _load_parts(
    spec: ModelSpec, resolved: ResolvedSource, common: dict[str, Any], device: Any, quant_config: Any
) -> tuple[Any, Any, Any, Any]:
    """Config, tokenizer, model (not yet moved to ``device``) and the dtype chosen for it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(resolved.location, **common)
    except MODEL_FILE_ERRORS as exc:
        raise _load_error("the model config", resolved, exc) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, **common)
    except TOKENIZER_FILE_ERRORS as exc:
        raise _load_error("the tokenizer", resolved, exc) from exc

    dtype = _choose_dtype(spec, config, device)
    model_cls = (
        AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    )
    # The config already read: from_pretrained would read it again (for a GGUF file, parse it again).
    kwargs: dict[str, Any] = {**common, "dtype": dtype, "config": config}
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = model_cls.from_pretrained(resolved.location, **kwargs)
    except MODEL_FILE_ERRORS as exc:  # a pickle the safe loader refused among them
        raise _load_error("the model weights", resolved, exc) from exc
    return config, tokenizer, model, dtype


def _prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    """Batches need a pad token; decoder-only models need left padding."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif getattr(model.generation_config, "pad_token_id", None) is not None:
            tokenizer.pad_token_id = model.generation_config.pad_token_id
    if not model.config.is_encoder_decoder:
        tokenizer.padding_side = "left"


def loaded_from_existing(model: Any, tokenizer: Any, *, name: str | None = None) -> LoadedModel:
    """Wrap a model and tokenizer the user already has (nothing is loaded or moved)."""
    check_transformers()
    first = next(model.parameters())
    hf_id = (
        name
        or getattr(model, "name_or_path", "")
        or getattr(model.config, "name_or_path", "")
        or "user-model"
    )
    source: ModelSource = "local" if Path(str(hf_id)).exists() else "hub"
    caps = probe_capabilities(model, capabilities_from_config(model.config, model_class=type(model).__name__))
    quantized = getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        capabilities=caps,
        spec=ModelSpec(model=str(hf_id)),
        resolved=ResolvedSource(str(hf_id), None, str(hf_id), source, False),
        device=first.device,
        dtype=first.dtype,
        quantization="quantized" if quantized else None,
        revision=config_revision(model.config),
    )
