"""The one error the runtime raises for bad input, bad models and missing hardware."""
from __future__ import annotations


class DehazeError(Exception):
    """The model, the frames or this machine cannot do what was asked; the message says why and what to do."""
