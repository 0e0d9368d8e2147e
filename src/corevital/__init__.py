"""CoreVital: LLM inference health monitoring from inside the model.

The public API. Importing the package imports only :mod:`corevital._exports`: each name below is
imported on first use (PEP 562), so a command that only reads stored runs starts without pydantic
models, numpy or torch; models are loaded (and torch imported) on the first run.
"""

from __future__ import annotations as _annotations

import typing as _typing

from corevital._exports import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from corevital.analysis.online import OnlineStep
    from corevital.analysis.policies import (
        StopOnNonFinite,
        StopOnRepetition,
        StopOnRiskAbove,
        StopPolicy,
        StopWhen,
    )
    from corevital.config import Settings, load_settings
    from corevital.errors import CoreVitalError
    from corevital.live import StreamEvent
    from corevital.monitor import CoreVitalMonitor, default_policies
    from corevital.report.encoding import load_report, report_from_json, report_to_json
    from corevital.report.schema import Report

__version__ = "0.5.0"

_HOMES: dict[str, str] = {
    "CoreVitalError": "corevital.errors",
    "CoreVitalMonitor": "corevital.monitor",
    "OnlineStep": "corevital.analysis.online",
    "Report": "corevital.report.schema",
    "Settings": "corevital.config",
    "StopOnNonFinite": "corevital.analysis.policies",
    "StopOnRepetition": "corevital.analysis.policies",
    "StopOnRiskAbove": "corevital.analysis.policies",
    "StopPolicy": "corevital.analysis.policies",
    "StopWhen": "corevital.analysis.policies",
    "StreamEvent": "corevital.live",
    "default_policies": "corevital.monitor",
    "load_report": "corevital.report.encoding",
    "load_settings": "corevital.config",
    "report_from_json": "corevital.report.encoding",
    "report_to_json": "corevital.report.encoding",
}

__all__ = [
    "CoreVitalError",
    "CoreVitalMonitor",
    "OnlineStep",
    "Report",
    "Settings",
    "StopOnNonFinite",
    "StopOnRepetition",
    "StopOnRiskAbove",
    "StopPolicy",
    "StopWhen",
    "StreamEvent",
    "__version__",
    "default_policies",
    "load_report",
    "load_settings",
    "report_from_json",
    "report_to_json",
]


__getattr__, __dir__ = _lazy_exports(__name__, _HOMES, globals(), __all__)
