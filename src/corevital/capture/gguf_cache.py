"""A GGUF model converted once: safetensors, config and tokenizer files that later loads read directly.

Loading a GGUF file parses its metadata and de-quantises every tensor (for the default model, about
20 s on a 2-core machine); reading the same weights from safetensors takes about a second. The
first load of a GGUF file writes the loaded model with ``save_pretrained`` into a cache entry; later
loads read that entry with ``from_pretrained``. Only the bytes on disk change: the model is the
same, and reports name the GGUF file as their source either way.

Where: ``$XDG_CACHE_HOME/corevital`` (``~/.cache/corevital`` when that variable is not set), or the
``cache_dir`` setting; ``cache_dir: off`` turns the cache off. One entry per
(file, transformers version, dtype): the file is identified by its size and a SHA-256 of its header
and of 16 blocks spread over it (reading ~1 MiB, not the whole file), so a replaced file gets a new
entry. An entry is written in a temporary directory and renamed into place once complete, so
concurrent first loads never see a half-written entry (the second rename loses and is discarded).
The entry's ``tokenizer_config.json`` lists the tokenizer's added tokens, so that a load reads
``tokenizer.json`` once (:func:`record_added_tokens`).
Every entry lists its files and their sizes in ``corevital-cache.json``, written last; an entry
whose list is missing or does not match the files, or that fails to load, is removed and rebuilt.

A later load does not go through ``from_pretrained`` (whose weight-name mapping and checks take
most of a second on a 2-core CPU): :func:`load_converted` builds the model on the meta device
(nothing allocated, nothing initialised), puts the safetensors tensors in place (memory-mapped, no
copy) and the buffers the entry recorded (``corevital-buffers.safetensors``: the rotary
frequencies and any other buffer, as the conversion computed them), then ties the weights. The
result is the model ``from_pretrained`` gives, parameter for parameter and buffer for buffer; any
name, shape or dtype that does not fit makes the caller use ``from_pretrained`` instead.
A cache that cannot be written (read-only, disk full) costs the speed-up, never the load. Staging
directories of a process killed while writing are removed by the next write (after an hour).
Entries of other transformers versions or replaced files stay until the directory is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: entries record their buffers (BUFFERS); 3: and their added tokens (TOKENIZER_CONFIG)
MANIFEST = "corevital-cache.json"
WEIGHTS = "model.safetensors"
BUFFERS = "corevital-buffers.safetensors"
TOKENIZER_CONFIG = "tokenizer_config.json"
CACHE_OFF = "off"
_SAMPLE_BLOCKS = 16
_BLOCK = 64 * 1024
STALE_AFTER_S = 3600.0  # a staging directory this old belongs to a process that was killed


def cache_root(cache_dir: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache directory: ``cache_dir`` if given, else ``$XDG_CACHE_HOME/corevital`` (None: off)."""
    if cache_dir is not None:
        return None if cache_dir.strip().lower() == CACHE_OFF else Path(cache_dir).expanduser()
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "corevital"


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a file's size, its first 1 MiB and 16 blocks spread over the rest (fast on GBs)."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"size={size};".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1024 * 1024))
        for index in range(_SAMPLE_BLOCKS):
            handle.seek(size * index // _SAMPLE_BLOCKS)
            digest.update(handle.read(_BLOCK))
        handle.seek(max(0, size - _BLOCK))
        digest.update(handle.read(_BLOCK))
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One converted GGUF file: its directory and what it was converted from."""

    directory: Path
    source: Path
    key: str

    def is_complete(self) -> bool:
        """The manifest is present and every file it lists has the size it lists."""
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
            files = manifest["files"]
            if manifest.get("format") != CACHE_FORMAT or manifest.get("key") != self.key or not files:
                return False
            return all((self.directory / name).stat().st_size == size for name, size in files.items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def discard(self) -> None:
        """Remove the entry (renamed aside first, so a concurrent reader never sees it half-removed)."""
        aside = self.directory.with_name(f".discard-{self.directory.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.directory, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def write(self, model: Any, tokenizer: Any) -> bool:
        """Save ``model`` and ``tokenizer`` as this entry; False (logged) when it cannot be written."""
        parent = self.directory.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(parent)
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{self.directory.name}-", dir=parent))
        except OSError as exc:
            log.warning("GGUF cache not written (%s): %s", parent, exc.strerror or exc)
            return False
        try:
            save_converted(model, tokenizer, staging)
            files = {
                str(p.relative_to(staging)): p.stat().st_size
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "format": CACHE_FORMAT,
                "key": self.key,
                "source": str(self.source),
                "files": files,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            try:
                os.rename(staging, self.directory)
            except OSError:  # another process finished first (or a broken entry is in the way)
                if not self.is_complete():
                    self.discard()
                    os.rename(staging, self.directory)
            return True
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("GGUF cache not written (%s): %s", self.directory, exc)
            return False
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def remove_leftovers(parent: Path, *, older_than_s: float = STALE_AFTER_S) -> None:
    """Remove staging and discarded directories that a killed process left (older than an hour)."""
    now = time.time()
    for leftover in [*parent.glob(".tmp-*"), *parent.glob(".discard-*")]:
        try:
            if now - leftover.stat().st_mtime > older_than_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def cache_entry(root: Path, gguf_path: Path, *, transformers_version: str, dtype: str) -> CacheEntry:
    """The entry of ``gguf_path`` converted by this transformers version into ``dtype``."""
    key_text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "file": file_fingerprint(gguf_path),
            "transformers": transformers_version,
            "dtype": dtype,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    name = f"{gguf_path.stem}-{key}"
    return CacheEntry(directory=root / "gguf" / name, source=gguf_path, key=key)


def save_converted(model: Any, tokenizer: Any, directory: Path) -> None:
    """Write a model loaded from GGUF (weights already de-quantised) as a plain transformers directory.

    transformers marks such a model as GGUF-quantised and refuses to save it; its tensors are
    ordinary floating-point tensors by then, so the marker is set aside for the save, and the
    config is written without the GGUF quantization entry (a reload would look for the file).
    """
    quantizer = model.__dict__.get("hf_quantizer")
    config = model.config
    had_quantization = "quantization_config" in config.__dict__
    quantization = config.__dict__.pop("quantization_config", None)
    architectures = config.architectures
    if not architectures:
        config.architectures = [type(model).__name__]
    try:
        model.hf_quantizer = None
        model.save_pretrained(directory)
    finally:
        model.hf_quantizer = quantizer
        if had_quantization:
            config.__dict__["quantization_config"] = quantization
        config.architectures = architectures
    tokenizer.save_pretrained(directory)
    record_added_tokens(tokenizer, directory / TOKENIZER_CONFIG)
    save_buffers(model, directory / BUFFERS)


def record_added_tokens(tokenizer: Any, path: Path) -> None:
    """Write the tokenizer's added tokens (``added_tokens_decoder``) into its ``tokenizer_config.json``.

    A tokenizer converted from GGUF is saved without them there; loading it then parses the whole
    ``tokenizer.json`` again in Python to find them (0.3-0.5 s for the default model's 3.5 MB file
    on a 2-core CPU), besides the tokenizers library's own read of it. With them listed, the load
    reads the file once, and gives the same tokenizer. Nothing is changed when the file lists them
    already or the tokenizer has none.
    """
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if not decoder or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "added_tokens_decoder" in config:
        return
    config["added_tokens_decoder"] = {
        str(index): dict(token.__getstate__()) for index, token in sorted(decoder.items())
    }
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_buffers(model: Any, path: Path) -> None:
    """Every buffer of ``model`` (persistent or not) by its dotted name, as a safetensors file."""
    from safetensors.torch import save_file

    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers(remove_duplicate=False)}
    save_file(buffers, str(path))


def load_converted(directory: Path, model_cls: Any, config: Any, dtype: Any) -> Any | None:
    """The model of a complete entry, built without ``from_pretrained`` (None: not possible here).

    ``model_cls`` is the auto class (``AutoModelForCausalLM``...), ``config`` the entry's config
    (not modified) and ``dtype`` the dtype the entry was written in. The model is built on the meta
    device, then every parameter and buffer is the entry's own tensor; tied parameters are tied
    again. None when the entry records no buffers (an older format) or a tensor's name, shape or
    dtype differs from the model's, or anything is left on the meta device: the caller then loads
    the entry with ``from_pretrained``. A file that cannot be read raises (OSError, the safetensors
    error), as ``from_pretrained`` would.
    """
    import copy

    import torch
    from safetensors.torch import load_file

    buffers_path = directory / BUFFERS
    if not buffers_path.is_file():
        return None
    with torch.device("meta"):
        model = model_cls.from_config(copy.deepcopy(config), dtype=dtype)
    weights = load_file(str(directory / WEIGHTS))
    expected = model.state_dict()
    if not _fits(weights, expected):
        return None
    model.load_state_dict(weights, strict=False, assign=True)
    buffers = load_file(str(buffers_path))
    if not _fits(buffers, dict(model.named_buffers(remove_duplicate=False))):
        return None
    for name, tensor in buffers.items():
        owner, _, attribute = name.rpartition(".")
        model.get_submodule(owner)._buffers[attribute] = tensor
    model.tie_weights()
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    generation_config = directory / "generation_config.json"
    if model.can_generate() and generation_config.is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(directory)
    return model


def _fits(tensors: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Every tensor has a counterpart of the same shape and dtype in ``expected``."""
    for name, tensor in tensors.items():
        known = expected.get(name)
        if known is None or known.shape != tensor.shape or known.dtype != tensor.dtype:
            log.debug("GGUF cache entry tensor %s does not fit the model", name)
            return False
    return True
