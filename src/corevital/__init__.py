"""CoreVital: LLM inference health monitoring from inside the model.

The public API. Importing it does not import torch: models are loaded (and torch imported) on the
first run.
"""

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
