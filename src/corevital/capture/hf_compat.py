"""Every use of transformers internals by capture, in one place, checked when a model is loaded.

Capture observes a model from inside ``generate()``, which needs a few things transformers does not
promise to keep: its attention and mask function registries, the config attribute that selects the
attention function, the model-specific eager attention functions, the SDPA and eager-mask builders,
the causal rule's function, the generation method that builds the logits processors, the cache's
layer classes, the keyword that hands ``generate()`` a cache, the rule by which ``generate()``
compiles the decoding steps, the revision a config was read at, the GGUF loader's progress bar and
the forward hooks transformers installs to return hidden states (which capture removes again where
it caused them: :func:`output_capture_hooks_as_found`). Each has one function or name here; the
rest of capture imports them from this module and from transformers' public API only (a contract
test checks that).
:func:`check_transformers` runs when a model is loaded or watched: if the installed transformers
lacks one of the pieces capture needs, it raises a one-line :class:`~corevital.errors.ModelLoadError`
naming the version and the missing piece, instead of a failure deep inside a generation (the GGUF
bar is cosmetic and the hooks' removal saves time only: without either, nothing else changes);
likewise when torch is older than :data:`TESTED_TORCH`, the oldest torch the suite passes with.

The supported range is :data:`TESTED_TRANSFORMERS` (pyproject.toml's pin; a test keeps them equal).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from corevital.errors import ModelLoadError

TESTED_TRANSFORMERS = ">=5.23,<5.26"
# The oldest torch the whole suite passes with (pyproject's ``capture`` extra; a test keeps them equal).
TESTED_TORCH = ">=2.11"

EagerFn = Callable[..., tuple[Tensor, Tensor | None]]

_missing: list[str] = []  # pieces not found when this module was imported
_REGISTRATION_LOCK = threading.Lock()


def _found(module: str, name: str) -> Any:
    """``module.name`` from transformers, or a stand-in that raises the version error when called."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        piece = f"{module}.{name}"
        _missing.append(piece)

        def missing(*args: Any, **kwargs: Any) -> Any:
            raise _version_error(piece)

        return missing


# Called on every attention layer of every step: bound here once, used by name.
sdpa_attention_forward = cast(
    Callable[..., tuple[Tensor, Tensor | None]],
    _found("transformers.integrations.sdpa_attention", "sdpa_attention_forward"),
)
eager_mask = cast(Callable[..., Tensor | None], _found("transformers.masking_utils", "eager_mask"))
sdpa_mask = cast(Callable[..., Tensor | None], _found("transformers.masking_utils", "sdpa_mask"))
causal_mask_function = cast(
    Callable[[int, int, int, int], bool], _found("transformers.masking_utils", "causal_mask_function")
)
_DynamicLayer = cast(type, _found("transformers.cache_utils", "DynamicLayer"))
_StaticLayer = cast(type, _found("transformers.cache_utils", "StaticLayer"))
_DynamicCache = cast(type, _found("transformers.cache_utils", "DynamicCache"))


@functools.cache
def transformers_version() -> str:
    """The installed transformers' version (read once: the package metadata lookup takes milliseconds)."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _version_error(piece: str) -> ModelLoadError:
    return ModelLoadError(
        f"transformers {transformers_version()} has no {piece}, which CoreVital's capture uses "
        f"(tested with transformers{TESTED_TRANSFORMERS})"
    )


# --- the load-time check ------------------------------------------------------------------------
@functools.cache
def check_transformers() -> None:
    """Raise a one-line ModelLoadError if torch is older than capture supports or a piece of
    transformers capture uses is missing (checked once per process)."""
    floor = TESTED_TORCH.removeprefix(">=")
    if _release(torch.__version__) < _release(floor):
        raise ModelLoadError(
            f"torch {torch.__version__} is older than CoreVital's capture supports (torch>={floor})"
        )
    import_losses_without_scipy()
    if _missing:
        raise _version_error(_missing[0])
    for module, name in (
        ("transformers.modeling_utils", "ALL_ATTENTION_FUNCTIONS"),
        ("transformers.masking_utils", "ALL_MASK_ATTENTION_FUNCTIONS"),
    ):
        registry = _registry(module, name)
        if registry is None:
            raise _version_error(f"{module}.{name}.register / ._global_mapping")
    from transformers import GenerationMixin, PretrainedConfig

    if not callable(getattr(GenerationMixin, "_get_logits_processor", None)):
        raise _version_error("GenerationMixin._get_logits_processor")
    if not isinstance(getattr(PretrainedConfig, "_attn_implementation", None), property) or (
        "_attn_implementation_internal" not in vars(PretrainedConfig())
    ):
        raise _version_error("PretrainedConfig._attn_implementation_internal")


_LOSSES = "transformers.loss.loss_utils"


def import_losses_without_scipy() -> None:
    """Import transformers' training losses (``modeling_utils`` imports them) without importing SciPy.

    Several object-detection losses bind ``scipy.optimize.linear_sum_assignment`` when they are
    imported and SciPy is installed; importing ``scipy.optimize`` is about 0.3 s of a 2-core CPU's
    start-up, for functions a generation never calls. The losses are imported while transformers'
    ``is_scipy_available`` answers False; each loss module that asked gets its own
    ``is_scipy_available`` back and a ``linear_sum_assignment`` that imports SciPy on its first
    call, so a loss that needs it works as before. Nothing is done when the losses or
    ``scipy.optimize`` are already imported, or SciPy is not installed.
    """
    if _LOSSES in sys.modules or "scipy.optimize" in sys.modules:
        return
    try:
        hf_utils = importlib.import_module("transformers.utils")
    except ImportError:
        return
    available = getattr(hf_utils, "is_scipy_available", None)
    if not callable(available) or not available():
        return
    setattr(hf_utils, "is_scipy_available", lambda: False)  # noqa: B010
    try:
        importlib.import_module(_LOSSES)
    except ImportError:
        pass  # check_transformers names what is missing
    finally:
        setattr(hf_utils, "is_scipy_available", available)  # noqa: B010
    for name, module in list(sys.modules.items()):
        if (
            name.startswith("transformers.loss.")
            and module is not None
            and "is_scipy_available" in vars(module)
        ):
            setattr(module, "is_scipy_available", available)  # noqa: B010
            if "linear_sum_assignment" not in vars(module):
                setattr(module, "linear_sum_assignment", _linear_sum_assignment)  # noqa: B010


def _linear_sum_assignment(*args: Any, **kwargs: Any) -> Any:
    """``scipy.optimize.linear_sum_assignment``, SciPy imported on the first call."""
    return importlib.import_module("scipy.optimize").linear_sum_assignment(*args, **kwargs)


def _registry(module: str, name: str) -> Any:
    """transformers' class-wide attention (or mask) function registry, if it is the expected kind."""
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    mapping = getattr(type(found), "_global_mapping", None)
    return found if isinstance(mapping, dict) and callable(getattr(found, "register", None)) else None


# --- attention routing -----------------------------------------------------------------------------
@contextmanager
def registered_attention(
    name: str, attention: Callable[..., Any], mask: Callable[..., Tensor | None]
) -> Iterator[None]:
    """Register ``attention`` and its ``mask`` builder under ``name`` with transformers while inside."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    try:
        with _REGISTRATION_LOCK:
            ALL_ATTENTION_FUNCTIONS.register(name, attention)
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask)
        yield
    finally:
        with _REGISTRATION_LOCK:  # class-wide mappings: transformers has no unregister
            type(ALL_ATTENTION_FUNCTIONS)._global_mapping.pop(name, None)
            type(ALL_MASK_ATTENTION_FUNCTIONS)._global_mapping.pop(name, None)


def attention_registered(name: str) -> bool:
    """Whether an attention function is registered with transformers under ``name``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _REGISTRATION_LOCK:
        return name in type(ALL_ATTENTION_FUNCTIONS)._global_mapping


@contextmanager
def attention_implementation(model: nn.Module, name: str, configs: list[Any] | None = None) -> Iterator[None]:
    """Point every config of ``model`` (sub-models' too) at the attention function ``name``; restore on exit.

    The value is written to the instance dictionary: the public setter would also validate the name
    and recurse into sub-configs, which are set here one by one (every module's config).
    ``configs``: :func:`model_configs` of ``model``, when already found.
    """
    found = model_configs(model) if configs is None else configs
    previous = [(cfg, cfg.__dict__.get("_attn_implementation_internal")) for cfg in found]
    try:
        for cfg, _ in previous:
            cfg.__dict__["_attn_implementation_internal"] = name
        yield
    finally:
        for cfg, value in previous:
            cfg.__dict__["_attn_implementation_internal"] = value


def model_configs(model: nn.Module) -> list[Any]:
    """Every distinct config object of ``model`` and its modules (sub-models' configs too)."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    configs[id(model.config)] = model.config
    return list(configs.values())


def eager_attention_function(module: nn.Module) -> EagerFn | None:
    """The eager attention function defined next to the module's class (model-specific), or None."""
    for cls in type(module).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if callable(fn):
            return cast(EagerFn, fn)
    return None


# --- generation ------------------------------------------------------------------------------------
@contextmanager
def last_logits_processor(model: Any, processor: Callable[..., Any]) -> Iterator[None]:
    """Append ``processor`` after every processor and warper generate() builds, while inside.

    A processor passed to ``generate(logits_processor=...)`` runs before the temperature, top-k
    and top-p warpers; to see the distribution actually sampled from, it must run after them, so
    the model's list builder is wrapped for the duration (an instance attribute, removed on exit).
    """
    build = model._get_logits_processor

    def build_with_observer(*args: Any, **kwargs: Any) -> Any:
        processors = build(*args, **kwargs)
        processors.append(processor)
        return processors

    model._get_logits_processor = build_with_observer
    try:
        yield
    finally:
        del model._get_logits_processor


# --- cache and config --------------------------------------------------------------------------------
def append_only_layers(cache: Any) -> list[Any] | None:
    """The cache's layers if every one is a plain ``DynamicLayer`` (keys appended, never dropped).

    Exactly that class: its subclasses (sliding windows, quantized layers) drop or rewrite keys.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None
    return layers if all(type(entry) is _DynamicLayer for entry in layers) else None


def static_full_layers(cache: Any) -> list[Any] | None:
    """The cache's layers if every one is a plain ``StaticLayer`` (preallocated, written in order).

    Exactly that class: its sliding-window subclass overwrites old positions. A decoding step's
    query at position ``p`` saw the keys at positions ``0..p``; later positions are written after it.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None
    return layers if all(type(entry) is _StaticLayer for entry in layers) else None


def decoding_steps_compiled(model: Any, cache: Any) -> bool:
    """Whether ``generate()`` compiles ``model``'s decoding steps over ``cache`` unless told otherwise.

    transformers' rule (``_valid_auto_compile_criteria``) without a ``compile_config``: a cache of
    fixed shape (``is_compileable``: static and hybrid caches) that is not a ``DynamicCache``, on a GPU,
    unless a quantization method cannot be compiled or the weights are offloaded to the CPU or disk.
    """
    decoder_cache = getattr(cache, "self_attention_cache", cache)  # an encoder-decoder cache's decoder part
    if not getattr(cache, "is_compileable", False) or type(decoder_cache) is _DynamicCache:
        return False
    if getattr(model, "device", torch.device("cpu")).type not in ("cuda", "xpu"):
        return False
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not getattr(quantizer, "is_compileable", False):
        return False
    devices = set(getattr(model, "hf_device_map", {}).values())
    return not ("disk" in devices or ("cpu" in devices and len(devices) > 1))


# transformers answers ``output_hidden_states`` (and ``output_attentions``) by installing forward hooks
# on the modules that produce those outputs (every decoder layer and attention module), once, for the
# model's life, marking the model so; a module with a hook takes PyTorch's slow call path in every
# later forward, asked for outputs or not.
_CAPTURE_HOOKS_MODULE = "transformers.utils.output_capturing"
_CAPTURE_HOOKS_MARK = "_output_capturing_hooks_installed"
try:  # optional: without it (another transformers), the hooks stay, as transformers leaves them
    _install_capture_hooks: Any = getattr(
        importlib.import_module(_CAPTURE_HOOKS_MODULE), "maybe_install_capturing_hooks", None
    )
except ImportError:
    _install_capture_hooks = None


@functools.cache
def _capture_hooks_removable() -> bool:
    """Whether transformers marks installed hooks with the attribute :func:`remove_output_capture_hooks`
    clears (where it does not, the hooks stay: removing them without the mark would stop transformers
    from installing them again when next asked)."""
    code = getattr(_install_capture_hooks, "__code__", None)
    return code is not None and _CAPTURE_HOOKS_MARK in code.co_consts


_MARKED_MODULES: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, ...]] = weakref.WeakKeyDictionary()


def _capture_hooks_marked(model: nn.Module) -> bool:
    """Whether transformers marks some module of ``model`` as holding its output-capturing hooks.

    It marks the modules whose forward returns the outputs (a ``PreTrainedModel``: the base model, a
    composite model's parts), found once per model: a check of a few modules, where counting the
    hooks walks every module.
    """
    marked = _MARKED_MODULES.get(model)
    if marked is None:
        from transformers import PreTrainedModel

        marked = _MARKED_MODULES[model] = tuple(m for m in model.modules() if isinstance(m, PreTrainedModel))
    return any(_CAPTURE_HOOKS_MARK in vars(module) for module in marked)


def is_output_capture_hook(hook: Any) -> bool:
    """Whether ``hook`` is one of transformers' output-capturing hooks (which record, never change,
    a module's output)."""
    return getattr(hook, "__module__", None) == _CAPTURE_HOOKS_MODULE


def other_forward_hooks(modules: Iterable[nn.Module]) -> bool:
    """Whether a forward hook other than transformers' output-capturing ones is registered on one of
    ``modules``, or on every module (PyTorch's global forward hooks): one that may change an output."""
    if nn.modules.module._global_forward_hooks:
        return True
    return any(
        not is_output_capture_hook(hook) for module in modules for hook in module._forward_hooks.values()
    )


def output_capture_hooks(model: nn.Module) -> int:
    """How many of transformers' output-capturing forward hooks ``model``'s modules hold."""
    return sum(
        is_output_capture_hook(hook) for module in model.modules() for hook in module._forward_hooks.values()
    )


def remove_output_capture_hooks(model: nn.Module) -> int:
    """Remove transformers' output-capturing hooks from ``model`` and the marks that say they are
    installed (transformers installs them again the next time a forward asks for hidden states);
    the number removed. Nothing is removed where transformers marks them otherwise."""
    if not _capture_hooks_removable():
        return 0
    removed = 0
    for module in model.modules():
        hooks = module._forward_hooks
        for key, hook in list(hooks.items()):
            if is_output_capture_hook(hook):
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                removed += 1
        if _CAPTURE_HOOKS_MARK in vars(module):
            delattr(module, _CAPTURE_HOOKS_MARK)
    return removed


@contextmanager
def output_capture_hooks_as_found(
    model: nn.Module, *, install: bool = False, keep: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Run a block that asks ``model`` for its hidden states; if the model held none of transformers'
    output-capturing hooks before it, remove those installed for the block, so the model's later
    forwards that ask for nothing keep PyTorch's fast call path.

    ``install``: install them before the block (transformers installs them at the first forward
    that asks, which inside a compiled decoding step would be traced: a graph break). ``keep()``,
    asked after the block: leave them (a block whose forwards were compiled was traced with them).
    """
    if not _capture_hooks_removable():  # nothing is removed: installing is all there is to do
        if install and _install_capture_hooks is not None:
            _install_capture_hooks(model)
        yield
        return
    before = _capture_hooks_marked(model)
    if install and not before:
        _install_capture_hooks(model)  # transformers' installer, from the top: every submodel gets its own
    try:
        yield
    finally:
        if not before and _capture_hooks_marked(model) and not keep():
            remove_output_capture_hooks(model)


def generate_cache_keyword() -> str:
    """The ``generate()`` keyword that hands it a cache object: ``cache`` from transformers 5.24 (which
    deprecates ``past_key_values`` with a warning), ``past_key_values`` before it."""
    return "cache" if _release(transformers_version()) >= (5, 24) else "past_key_values"


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string ("5.24.0.dev0" -> (5, 24, 0)); () when there are none."""
    numbers: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def generate_makes_caches(model: Any) -> bool:
    """Whether ``generate()`` gives ``model`` a cache object of its own making (False for the few
    models that bring their own and ignore ``cache_implementation``: Reformer, RWKV, ...)."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    return True if supports is None else bool(supports())


def static_cache(model: Any, max_cache_len: int) -> Any:
    """A new ``StaticCache`` for ``model`` (its decoder's text config), as ``generate()`` makes one for
    ``cache_implementation="static"``; its tensors are allocated at the first forward pass."""
    from transformers import StaticCache

    return StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=max_cache_len)


def config_revision(config: Any) -> str | None:
    """The Hub commit a model's config was read at, or None (a local directory or file, or not known).

    transformers records it as ``config._commit_hash`` where it does; otherwise it is the snapshot
    of the Hub cache that holds the config of ``config.name_or_path``.
    """
    revision = getattr(config, "_commit_hash", None)
    if isinstance(revision, str):
        return revision
    name = getattr(config, "name_or_path", None)
    if not isinstance(name, str) or not name or Path(name).exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a repository id
        return None
    parts = Path(cached).parts if isinstance(cached, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


@contextmanager
def gguf_bar_follows_progress_switch() -> Iterator[None]:
    """Within the block, the GGUF de-quantisation bar is silent when transformers' bars are disabled.

    transformers draws that bar with a bare ``tqdm`` of its GGUF module, deaf to its own
    ``transformers.utils.logging.disable_progress_bar()``; the module's ``tqdm`` is replaced by a
    disabled one for the block and restored after. Without that module nothing changes.
    """
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    setattr(gguf_utils, "tqdm", functools.partial(bar, disable=True))  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf_utils, "tqdm", bar)  # noqa: B010
