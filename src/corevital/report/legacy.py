"""Reading reports written by the original CoreVital (schema 0.3.0 and 0.4.0).

0.5.0 is a superset of 0.4.0, and 0.3.0 is 0.4.0 minus some newer fields (``clipped``,
``entropy_mean_normalized``, ``collapsed_head_rate``, ``topk_mass``, ``attention_collapse_severity``,
the analysis extensions); fields a document lacks take their defaults. What the upgrade changes:

- logits summary legacy names: ``voter_agreement`` → ``topk_mass``, ``top1_top2_margin`` →
  ``top_k_margin``, ``topk`` → ``topk_probs``. The original wrote both names of a pair with the
  same value; we keep one. Should the two ever differ, the current name's value is kept and the
  legacy one is dropped as an undeclared field (below).
- ``extensions.risk.blamed_layers`` as a plain list of layer indices (older 0.4.0 traces) becomes
  ``[{layer}]``, and the list is kept as ``blamed_layers_flat`` when that is missing.
- ``schema_version`` becomes 0.5.0 and ``extensions.migrated_from`` records the original version.
- Fields the 0.5.0 schema does not declare (the report models refuse them) are dropped, and a
  ``LEGACY_FIELDS_DROPPED`` warning in ``warnings`` names them (``timeline[].logits_summary.x``).

The upgrade works on the parsed JSON document and does not modify its input.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from corevital.errors import ReportError
from corevital.report.schema import Report
from corevital.report.schema_base import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

Document = dict[str, Any]

LOGITS_LEGACY_NAMES: tuple[tuple[str, str], ...] = (
    ("voter_agreement", "topk_mass"),
    ("top1_top2_margin", "top_k_margin"),
    ("topk", "topk_probs"),
)
"""(legacy name, current name) pairs of ``logits_summary`` fields."""

DROPPED_WARNING_CODE = "LEGACY_FIELDS_DROPPED"
_NAMED_AT_MOST = 20


def document_version(doc: Mapping[str, Any]) -> str:
    """The document's ``schema_version``; a :class:`ReportError` when missing or not readable."""
    version = doc.get("schema_version")
    if not isinstance(version, str):
        raise ReportError("not a CoreVital report: no schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        readable = ", ".join(READABLE_SCHEMA_VERSIONS)
        raise ReportError(f"unsupported report schema_version {version!r}: this CoreVital reads {readable}")
    return version


def upgrade_document(doc: Mapping[str, Any]) -> Document:
    """Upgrade a 0.3.0/0.4.0 document to 0.5.0; a 0.5.0 document is returned as a plain copy.

    Only the containers that change are copied; the input is never modified.
    """
    version = document_version(doc)
    out: Document = dict(doc)
    if version == SCHEMA_VERSION:
        return out
    timeline = out.get("timeline")
    if isinstance(timeline, list):
        out["timeline"] = [_upgrade_step(step) for step in timeline]
    extensions = out.get("extensions")
    extensions = dict(extensions) if isinstance(extensions, Mapping) else {}
    risk = extensions.get("risk")
    if isinstance(risk, Mapping):
        extensions["risk"] = _upgrade_risk(risk)
    extensions["migrated_from"] = version
    out["extensions"] = extensions
    out["schema_version"] = SCHEMA_VERSION
    dropped: dict[str, None] = {}
    out = _declared_only(out, Report, "", dropped)
    warnings = out.get("warnings", [])
    if dropped and isinstance(warnings, list):  # anything else is left for validation to refuse
        out["warnings"] = [*warnings, _dropped_warning(version, list(dropped))]
    return out


def _declared_only(value: Any, annotation: Any, path: str, dropped: dict[str, None]) -> Any:
    """``value`` without the keys that the report model ``annotation`` (at any depth) does not declare.

    Containers are copied where they are walked; values of the wrong type are left for validation.
    """
    model = _model_in(annotation)
    if model is not None and isinstance(value, Mapping):
        kept: Document = {}
        for key, item in value.items():
            field = model.model_fields.get(key) if isinstance(key, str) else None
            where = f"{path}.{key}" if path else str(key)
            if field is None:
                dropped[where] = None
            else:
                kept[key] = _declared_only(item, field.annotation, where, dropped)
        return kept
    item_type = _list_item(annotation)
    if item_type is not None and isinstance(value, list):
        return [_declared_only(item, item_type, f"{path}[]", dropped) for item in value]
    return value


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of ``X | Y | None`` (the annotation itself when it is not a union)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _list_item(annotation: Any) -> Any:
    for member in _members(annotation):
        if typing.get_origin(member) is list:
            return typing.get_args(member)[0]
    return None


def _dropped_warning(version: str, paths: list[str]) -> Document:
    named = ", ".join(paths[:_NAMED_AT_MOST])
    more = f" and {len(paths) - _NAMED_AT_MOST} more" if len(paths) > _NAMED_AT_MOST else ""
    return {
        "code": DROPPED_WARNING_CODE,
        "message": f"fields of this {version} report that schema {SCHEMA_VERSION} does not declare "
        f"were dropped on reading: {named}{more}",
    }


def upgrade_logits_summary(summary: Mapping[str, Any]) -> Document:
    """Map the legacy logits field names onto the current ones, keeping a legacy value only if it differs."""
    out: Document = dict(summary)
    for legacy, current in LOGITS_LEGACY_NAMES:
        if legacy not in out:
            continue
        value = out.pop(legacy)
        if out.get(current) is None:
            out[current] = value
        elif out[current] != value:
            out[legacy] = value
    return out


def _upgrade_step(step: Any) -> Any:
    if not isinstance(step, Mapping):
        return step
    logits = step.get("logits_summary")
    if not isinstance(logits, Mapping):
        return step
    return {**step, "logits_summary": upgrade_logits_summary(logits)}


def _upgrade_risk(risk: Mapping[str, Any]) -> Document:
    out: Document = dict(risk)
    blamed = out.get("blamed_layers")
    if not isinstance(blamed, list):
        return out
    indices = [item for item in blamed if isinstance(item, int) and not isinstance(item, bool)]
    if not indices:
        return out
    out["blamed_layers"] = [
        {"layer": item} if isinstance(item, int) and not isinstance(item, bool) else item for item in blamed
    ]
    if "blamed_layers_flat" not in out:
        out["blamed_layers_flat"] = indices
    return out
