"""The base of every report model, the schema version constants and shared field types.

Every model of the report inherits :class:`ReportModel`. Unknown keys are kept (``extra="allow"``)
on purpose: the report is a contract shared by writers of several versions ("we may add fields,
never rename"), so a reader must carry fields it does not know yet instead of dropping them, and
reading an original CoreVital trace must lose nothing. Non-finite floats are written as ``null``.
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
    """Base of all report models: keeps unknown keys, writes NaN/Inf as null."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="null", validate_default=False)
