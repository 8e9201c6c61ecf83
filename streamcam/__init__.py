"""streamcam: see where a vision model looks, live."""

from .errors import StreamcamError

__version__ = "0.1.0"

__all__ = ["StreamcamError"]
