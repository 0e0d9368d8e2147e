"""The prompt hash, re-exported for storage and report code (defined in :mod:`corevital.analysis.hashing`).

``prompt_hash = sha256(model_id + "\\n" + prompt_text)`` over the exact UTF-8 text
(``metrics.md`` §6; the original CoreVital lowercased the prompt first, we do not).
"""

from __future__ import annotations

from corevital.analysis.hashing import prompt_hash

__all__ = ["prompt_hash"]
