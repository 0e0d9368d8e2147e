"""The base of every report model, the schema version constants and shared field types.

Every model of the report inherits :class:`ReportModel`, which refuses fields it does not declare
(``extra="forbid"``): the contract (``docs/report.md``) declares everything CoreVital writes, and the
committed JSON Schema says so (``additionalProperties: false``). The free-form slots are declared
as such (``dict`` fields: the per-step and per-layer ``extensions``, ``rag.retrieval_metadata``,
``performance.detailed_breakdown``, ``run_config.generate_kwargs``). Reports of the original
CoreVital (0.3.0, 0.4.0) are read leniently: :mod:`corevital.report.legacy` drops the fields this
schema does not know and says so in a warning. Non-finite floats are written as ``null``.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Final = "0.5.0"
"""The version this code writes."""

LEGACY_SCHEMA_VERSIONS: Final = ("0.3.0", "0.4.0")
"""Versions written by the original CoreVital that are read and upgraded."""

READABLE_SCHEMA_VERSIONS: Final = (*LEGACY_SCHEMA_VERSIONS, SCHEMA_VERSION)

OptFloat = float | None
"""A measurement: ``None`` when it could not be computed (or was NaN/Inf, written as null)."""

FloatList = list[float | None]
"""A list of measurements; an element is null where the value was not finite."""


class ReportModel(BaseModel):
    """Base of all report models: refuses undeclared fields, writes NaN/Inf as null."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null", validate_default=False)
