"""Loading a model and its tokenizer: Hub id, local directory, GGUF file, or the embedded default.

Errors a user can cause (unknown id, missing path, unreadable GGUF, CUDA or quantization without
CUDA) become one-line :mod:`corevital.errors` exceptions; nothing falls back silently.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corevital.capture.capabilities import ModelCapabilities, capabilities_from_config
from corevital.capture.default_model import locate_default_model
from corevital.capture.gguf_cache import CacheEntry, cache_entry, cache_root, load_converted
from corevital.capture.gguf_once import parsed_once
from corevital.capture.hf_compat import (
    check_transformers,
    config_revision,
    gguf_bar_follows_progress_switch,
    transformers_version,
)
from corevital.capture.identity import weights_sample
from corevital.capture.model_checks import probe_capabilities
from corevital.capture.model_constants import ModelConstants
from corevital.capture.model_files import MODEL_FILE_ERRORS, TOKENIZER_FILE_ERRORS, check_model_files
from corevital.capture.static_cache import KeptStaticCache
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
    cache_dir: str | None = None  # converted GGUF models; None: the user cache directory, "off": none
    tp_plan: str = "none"  # "auto": sharded over the torchrun processes (:mod:`.tensor_parallel`)

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
            cache_dir=settings.cache_dir,
            tp_plan=settings.tp_plan,
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

    @functools.cached_property
    def constants(self) -> ModelConstants:
        """What observing the model derives from it once (weight bytes, sketch, sites, norms)."""
        return ModelConstants(self.model, self.capabilities)

    @functools.cached_property
    def static_cache(self) -> KeptStaticCache:
        """The static key/value cache CoreVital's generations of this model reuse (:mod:`.static_cache`)."""
        return KeptStaticCache()

    @functools.cached_property
    def weights_fingerprint(self) -> tuple[float, ...]:
        """A fixed sample of the weights: equal for the same weights however loaded or named."""
        return weights_sample(self.model)

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


def import_model_stack() -> None:
    """Import what loading any model needs (transformers' model, config and tokenizer machinery)
    and check the transformers version, so a command can time its imports apart from the load."""
    check_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def _silent(_message: str) -> None:
    return None


def load_model(spec: ModelSpec, *, stage: Callable[[str], None] = _silent) -> LoadedModel:
    """Load, move to the device, probe; raise a one-line CoreVitalError on any user-caused failure.

    A GGUF file is read from its converted copy in the cache when there is one, and converted into
    the cache on its first load (:mod:`corevital.capture.gguf_cache`); either way the model is the
    same and ``resolved`` names the GGUF file. ``stage`` hears what is being done, in a few words
    (for a status line).
    """
    check_transformers()
    device = resolve_device(spec.device)
    quant_config, quant_label = _quantization_config(spec, device)
    resolved = resolve_source(spec)
    common: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    plain = quant_config is None and spec.tp_plan == "none"
    entry = _cache_entry(spec, resolved, device) if plain else None
    loaded = _load_cached(spec, resolved, entry, common, device) if entry is not None else None
    if loaded is None:
        check_model_files(resolved.location, resolved.gguf_file, _gguf_path(spec, resolved))
        if entry is not None:
            log.info("converting %s once into the cache %s", resolved.gguf_file, entry.directory.parent)
            stage(f"Converting {resolved.gguf_file} once into the cache (later loads take seconds)")
        if spec.revision:
            common["revision"] = spec.revision
        if resolved.gguf_file:
            common["gguf_file"] = resolved.gguf_file
        with parsed_once() if resolved.gguf_file else nullcontext(), gguf_bar_follows_progress_switch():
            loaded = _load_parts(spec, resolved, common, device, quant_config)
        if entry is not None:
            stage("Writing the converted model into the cache")
            entry.write(loaded[2], loaded[1])
    config, tokenizer, model, dtype = loaded
    if quant_config is None and spec.tp_plan == "none":  # a sharded model is where its plan put it
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


def _gguf_path(spec: ModelSpec, resolved: ResolvedSource) -> Path | None:
    """The GGUF file on this machine: in the model directory, or in the Hub cache (None: not there)."""
    if resolved.gguf_file is None:
        return None
    if resolved.source != "hub" and Path(resolved.location).is_dir():
        local = Path(resolved.location) / resolved.gguf_file
        return local if local.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(resolved.location, resolved.gguf_file, revision=spec.revision)
    except ValueError:
        return None
    return Path(cached) if isinstance(cached, str) else None


def _cache_entry(spec: ModelSpec, resolved: ResolvedSource, device: torch.device) -> CacheEntry | None:
    """Where this GGUF model's converted copy is (or will be); None when there is no cache to use."""
    root = cache_root(spec.cache_dir)
    path = _gguf_path(spec, resolved)
    if root is None or path is None:
        return None
    # The dtype chosen for a GGUF model depends on the request and the device only (the file is fixed).
    dtype = spec.dtype if spec.dtype != "auto" else ("float32" if device.type != "cuda" else "auto-cuda")
    try:
        return cache_entry(root, path.resolve(), transformers_version=transformers_version(), dtype=dtype)
    except OSError as exc:
        log.warning("GGUF cache not used for %s: %s", path, exc.strerror or exc)
        return None


def _load_cached(
    spec: ModelSpec, resolved: ResolvedSource, entry: CacheEntry, common: dict[str, Any], device: Any
) -> tuple[Any, Any, Any, Any] | None:
    """The model from its cache entry, or None (no entry yet; a broken one is removed)."""
    if not entry.is_complete():
        if entry.directory.exists():
            log.warning("GGUF cache entry %s is incomplete: converting the GGUF file again", entry.directory)
            entry.discard()
        return None
    cached = ResolvedSource(str(entry.directory), None, resolved.hf_id, "local", False)
    try:
        config, tokenizer, model, dtype = _load_parts(spec, cached, common, device, None, converted=True)
    except ModelLoadError as exc:
        log.warning(
            "GGUF cache entry %s cannot be loaded (%s): converting the GGUF file again", entry.directory, exc
        )
        entry.discard()
        return None
    # The same names as a load of the GGUF file itself (the cache is where the bytes came from).
    for where in (config, model.config):
        where.name_or_path = resolved.location
    for named in (model, tokenizer):
        if hasattr(named, "name_or_path"):
            named.name_or_path = resolved.location
    return config, tokenizer, model, dtype


def _load_parts(
    spec: ModelSpec,
    resolved: ResolvedSource,
    common: dict[str, Any],
    device: Any,
    quant_config: Any,
    *,
    converted: bool = False,
) -> tuple[Any, Any, Any, Any]:
    """Config, tokenizer, model (not yet moved to ``device``) and the dtype chosen for it.

    ``converted``: ``resolved`` is a GGUF cache entry, whose model is built directly from its files
    when they allow it (:func:`corevital.capture.gguf_cache.load_converted`).
    """
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
    if spec.tp_plan != "none":  # transformers sets up the torch.distributed group (gloo on CPUs) itself
        from transformers import DistributedConfig

        kwargs["distributed_config"] = DistributedConfig(tp_plan="auto")
    try:
        model = load_converted(Path(resolved.location), model_cls, config, dtype) if converted else None
        if model is None:
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
