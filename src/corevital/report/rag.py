"""``--rag-context FILE``: metadata of the retrieved context a prompt was built from.

The file is JSON: ``context_token_count``, ``retrieved_doc_ids``, ``retrieved_doc_titles``,
``retrieval_metadata`` (free), and optionally ``context_span: [start, end]``, the prompt tokens
(as the model reads them, 0-based, end excluded) that hold the retrieved context. With a span, the
report says how much of the later prompt's attention reaches the context, and the context_loss
signal uses it. The metadata is stored in ``extensions.rag``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from corevital.errors import InputError, validation_line
from corevital.report.limits import check_json_text, read_text_file
from corevital.report.schema import RagContext


def read_rag_context(path: str | Path) -> RagContext:
    p = Path(path)
    text = read_text_file(p, f"RAG context file {p}", error=InputError)
    check_json_text(text, f"RAG context file {p}", error=InputError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"RAG context file {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except (RecursionError, ValueError) as exc:
        raise InputError(f"RAG context file {p} is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise InputError(f"RAG context file {p} must hold a JSON object")
    try:
        rag = RagContext.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"RAG context file {p}: {validation_line(exc, where_default='file')}") from exc
    span = rag.context_span
    if span is not None and not (len(span) == 2 and 0 <= span[0] < span[1]):
        raise InputError(f"RAG context file {p}: context_span must be [start, end] with 0 <= start < end")
    return rag
