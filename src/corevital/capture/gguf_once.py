"""Loading a GGUF model with its file parsed once, not once per part.

transformers reads a GGUF file's config, its tokenizer and its weights in three separate calls,
and each builds a new ``gguf.GGUFReader`` over the whole file (for SmolLM2-135M, whose metadata
holds a 49,152-entry vocabulary, 3.3 s each on a 2-core machine); mapping the tensor names then
rebuilds the same ``gguf.TensorNameMap`` for every submodule of the model (397 times, 4.8 s).
Both are pure functions of their arguments, so while :func:`parsed_once` is active the ``gguf``
package hands out one reader per file and one name map per (architecture, layer count). transformers
imports them from ``gguf`` inside the functions that use them, which is what makes this work; if a
version stops doing so, nothing is shared and loading is merely slower. Everything is restored on
exit, and the cached reader (a memory map of the file) is dropped with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def parsed_once() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader`` and ``gguf.get_tensor_name_map`` are memoized."""
    try:
        import gguf
    except ImportError:  # transformers will say that gguf is missing
        yield
        return
    reader_cls = getattr(gguf, "GGUFReader", None)
    name_map = getattr(gguf, "get_tensor_name_map", None)
    if not callable(reader_cls) or not callable(name_map):
        yield
        return
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    cached_name_map: Callable[..., Any] = functools.lru_cache(maxsize=None)(name_map)
    setattr(gguf, "GGUFReader", shared_reader)  # noqa: B010 (mypy: a class replaced by a function)
    setattr(gguf, "get_tensor_name_map", cached_name_map)  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf, "GGUFReader", reader_cls)  # noqa: B010
        setattr(gguf, "get_tensor_name_map", name_map)  # noqa: B010
        readers.clear()
