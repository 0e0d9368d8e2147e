"""Building many report models at once from columns of values that are already as the schema wants.

A full report of a 32-layer model holds tens of thousands of small models (layer summaries, top-k
entries, sparse attention heads). The builder converts each statistic once, for all of them, into a
Python list (one *column*), and assembles the models from the columns without re-validating them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from corevital.report.schema_base import ReportModel

M = TypeVar("M", bound=ReportModel)

Columns = dict[str, list[Any]]
"""One list per field of a model, in the schema's field order, each with one value per model."""

_set_slot = object.__setattr__


def construct_rows(cls: type[M], columns: Columns) -> list[M]:
    """One ``cls`` per position, each field's value taken from its column.

    Each model is what ``cls.model_construct(**values)`` builds from the row's values (trusted, not
    validated), without ``model_construct``'s per-field lookups of aliases and defaults, which would
    cost more than the rest of the report: every field is given, so there is nothing to look up.
    A test checks that the models are the same as ``model_construct``'s.
    """
    names = list(columns)
    if names != list(cls.model_fields):
        raise ValueError(f"columns {names} are not the fields of {cls.__name__} in order")
    fields = set(names)
    keeps_extra = cls.model_config.get("extra") == "allow"  # model_construct's __pydantic_extra__: {} or None
    new = cls.__new__

    def construct(values: dict[str, Any]) -> M:
        model = new(cls)
        _set_slot(model, "__dict__", values)
        _set_slot(model, "__pydantic_fields_set__", fields.copy())
        _set_slot(model, "__pydantic_extra__", {} if keeps_extra else None)
        _set_slot(model, "__pydantic_private__", None)
        return model

    rows = zip(*columns.values(), strict=True)
    return [construct(dict(zip(names, row, strict=False))) for row in rows]  # a row has every field
