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
Every entry lists its files and their sizes in ``corevital-cache.json``, written last; an entry
whose list is missing or does not match the files, or that fails to load, is removed and rebuilt.
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

CACHE_FORMAT = 1
MANIFEST = "corevital-cache.json"
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
