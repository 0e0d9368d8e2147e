"""The prompt hash: one identity for "this prompt on this model", shared by analysis and storage.

``prompt_hash = sha256(model_id + "\\n" + prompt_text)`` over the exact UTF-8 text
(``metrics.md`` §6; the original CoreVital lowercased the prompt first, we do not).
"""

from __future__ import annotations

import hashlib


def prompt_hash(model_id: str, prompt_text: str) -> str:
    """Hex sha256 of ``model_id + "\\n" + prompt_text``."""
    return hashlib.sha256(f"{model_id}\n{prompt_text}".encode()).hexdigest()
