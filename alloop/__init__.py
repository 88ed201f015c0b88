"""alloop: active-learning annotation loops that survive crashes, restarts and long human waits.

``import alloop`` is cheap: heavy libraries (torch, sklearn, the Label Studio SDK) are imported
only by the modules that need them.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
