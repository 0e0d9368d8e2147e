"""The labelled-record format: prompts with known answers (or known outcomes), one JSON object a line.

A record::

    {"id": "cap-fr-1", "prompt": "What is the capital of France?", "answer": "Paris",
     "accepted": ["Paris, France"], "match": "contains", "split": "test", "group": "country-france",
     "task": "factual"}

Fields (unknown keys are errors):

``id``
    Non-empty string, unique in the file.
``prompt`` | ``messages``
    Exactly one: a prompt string, or a chat as a list of ``{"role": ..., "content": ...}``.
``answer`` (+ ``accepted``, ``match``) | ``failed``
    Exactly one. ``answer`` is the expected answer (a string or a JSON number), ``accepted`` lists
    alternative answers, ``match`` says how an output is compared with them: ``exact`` (default),
    ``numeric`` or ``contains`` (rules in :mod:`corevital.validation.answers`; a JSON-number answer is
    always compared numerically, and every variant of a numeric record must read as a number).
    ``failed`` is a pre-judged outcome (``true``: the model's output is known to be wrong); such a
    record takes neither ``accepted`` nor ``match``.
``split``
    Optional partition name (``dev``, ``test``...); :func:`load_labelled` can select one.
``group``
    Records that must not be separated between folds or splits (near-duplicates); defaults to ``id``.
``task``
    Optional task family (``arithmetic``, ``factual``...), for per-task breakdowns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from corevital.errors import InputError, validation_line
from corevital.report.limits import check_json_text, decode_utf8
from corevital.validation.answer_text import normalize_answer, parse_number

MatchMode = Literal["exact", "numeric", "contains"]


class ChatMessage(BaseModel):
    """One turn of a chat prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(min_length=1, description="system, user, assistant...")
    content: str


class LabelledRecord(BaseModel):
    """One labelled prompt (see the module docstring for the meaning of every field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    answer: str | StrictInt | StrictFloat | None = None
    accepted: list[str | StrictInt | StrictFloat] | None = None
    failed: StrictBool | None = None
    match: MatchMode = "exact"
    split: str | None = Field(default=None, min_length=1)
    # Filled with ``id`` when left out (by the "before" validator; the default only satisfies type checkers).
    group: str = Field(default="", min_length=1)
    task: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_group(cls, data: Any) -> Any:
        if isinstance(data, dict) and "group" not in data and isinstance(data.get("id"), str):
            return {**data, "group": data["id"]}
        return data

    @model_validator(mode="after")
    def _check(self) -> LabelledRecord:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if (self.answer is None) == (self.failed is None):
            raise ValueError("give exactly one of 'answer' or 'failed'")
        if self.failed is not None:
            extra = [name for name in ("accepted", "match") if name in self.model_fields_set]
            if extra:
                raise ValueError(f"'{extra[0]}' is only allowed with 'answer', not with 'failed'")
            return self
        variants = [self.answer, *(self.accepted or [])]
        for value in variants:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("answers must be finite numbers")
        if self.mode == "numeric":
            bad = [v for v in variants if isinstance(v, str) and parse_number(v) is None]
            if bad:
                raise ValueError(f"numeric record: {bad[0]!r} is not a number")
        else:
            empty = [v for v in variants if not normalize_answer(str(v))]
            if empty:
                raise ValueError(f"answer {empty[0]!r} is empty once normalised")
        return self

    @property
    def mode(self) -> MatchMode:
        """The comparison used: ``numeric`` for JSON-number answers, else ``match``."""
        if isinstance(self.answer, int | float):
            return "numeric"
        return self.match

    @property
    def prompt_text(self) -> str:
        """The prompt, or the chat's message contents joined by newlines."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(message.content for message in self.messages or [])


def iter_labelled(path: str | Path) -> Iterator[tuple[int, LabelledRecord]]:
    """``(line number, record)`` for every non-blank line of a labelled JSONL file."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read labelled file ({exc.strerror or exc})") from exc
    offset = 0
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, f"{path}:{number}", error=InputError, offset=offset)
            offset += len(raw)
            if not line.strip():
                continue
            check_json_text(line, f"{path}:{number}", error=InputError)
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
            except (RecursionError, ValueError) as exc:
                raise InputError(f"{path}:{number}: invalid JSON ({type(exc).__name__})") from exc
            if not isinstance(data, dict):
                raise InputError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
            try:
                yield number, LabelledRecord.model_validate(data)
            except ValidationError as exc:
                problem = validation_line(exc, where_default="record")
                raise InputError(f"{path}:{number}: {problem}") from exc


def load_labelled(path: str | Path, *, split: str | None = None) -> list[LabelledRecord]:
    """Read and check a labelled JSONL file; with ``split``, only the records of that split."""
    records: list[LabelledRecord] = []
    seen: dict[str, int] = {}
    for number, record in iter_labelled(path):
        if record.id in seen:
            raise InputError(f"{path}:{number}: duplicate id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = number
        records.append(record)
    if not records:
        raise InputError(f"{path}: no labelled records (the file is empty)")
    if split is None:
        return records
    chosen = [record for record in records if record.split == split]
    if not chosen:
        present = sorted({record.split for record in records if record.split is not None})
        known = ", ".join(present) if present else "none"
        raise InputError(f"{path}: unknown split {split!r} (splits in the file: {known})")
    return chosen
