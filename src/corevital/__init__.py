"""CoreVital: LLM inference health monitoring from inside the model."""

from corevital.errors import CoreVitalError

__version__ = "0.5.0"

__all__ = ["CoreVitalError", "__version__"]
