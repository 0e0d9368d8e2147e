"""One static key/value cache kept per loaded model across CoreVital's own generations.

With ``cache_implementation="static"``, ``generate()`` makes a new ``StaticCache`` on every call, and on
an accelerator it runs the decoding steps as a compiled CUDA graph whose static inputs include the
cache's tensors. A new cache that the caching allocator places at other addresses than the one the
graph was recorded with makes CUDA-graph trees record the graph again (tens of milliseconds for an
8B model), and where a cache lands depends on everything else the process allocated and freed since,
which differs from one generation to the next under capture. CoreVital's own generations (``run``,
the library's ``Pipeline``, the monitor's ``capture``) therefore pass ``generate()`` one cache per
model, reset before each use: its tensors, and the recorded graphs, stay where they are.

The cache grows as ``generate()``'s own does (the longest generation so far: a compiled step is
specialised on the cache length, so it never shrinks), and a new batch size replaces it. It holds
its memory between generations, as the compiled graphs do, until the model is released. Only the
plain ``"static"`` implementation of a decoder-only model that takes ``generate()``'s caches, without
beam search, a cache of the caller's, prefill chunking or ``use_cache=False``; every other case is
left to ``generate()``.
"""

from __future__ import annotations

from typing import Any

from corevital.capture.hf_compat import generate_cache_keyword, generate_makes_caches, static_cache


class KeptStaticCache:
    """The static cache of one model's generations (callers hold the model's generation lock)."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.batch_size = 0
        self.length = 0  # the longest cache this model has had: never shrinks (see the module)
        self.made = 0  # caches made (a test counts them)

    def for_generation(self, model: Any, batch_size: int, length: int) -> Any:
        """The cache for a generation of ``batch_size`` rows needing ``length`` positions, reset."""
        length = max(length, self.length)
        if self.cache is not None and batch_size == self.batch_size and length == self.length:
            self.cache.reset()
            return self.cache
        # the old cache's tensors are freed here, before the new one's (made at its first forward pass)
        self.cache = static_cache(model, length)
        self.batch_size, self.length = batch_size, length
        self.made += 1
        return self.cache


def with_kept_static_cache(
    kept: KeptStaticCache,
    model: Any,
    kwargs: dict[str, Any],
    *,
    batch_size: int,
    prompt_length: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """``generate()``'s keywords with the kept cache in place of ``cache_implementation="static"``.

    ``kwargs`` unchanged where the generation does not use the plain static cache (see the module).
    The cache holds ``prompt_length + max_new_tokens - 1`` positions (the last token's keys are never
    written), at least the generation config's ``max_cache_len``.
    """
    config = model.generation_config
    implementation = kwargs.get("cache_implementation", getattr(config, "cache_implementation", None))
    if (
        implementation != "static"
        or model.config.is_encoder_decoder
        or not generate_makes_caches(model)
        or "past_key_values" in kwargs
        or "cache" in kwargs
        or kwargs.get("num_beams", 1) > 1
        or kwargs.get("use_cache", getattr(config, "use_cache", True)) is False
        or kwargs.get("prefill_chunk_size", getattr(config, "prefill_chunk_size", None)) is not None
    ):
        return kwargs
    length = max(prompt_length + max_new_tokens - 1, getattr(config, "max_cache_len", None) or 0)
    cache = kept.for_generation(model, batch_size, length)
    # None: the model's generation config may name the static cache too, and generate() refuses both
    return {**kwargs, "cache_implementation": None, generate_cache_keyword(): cache}
