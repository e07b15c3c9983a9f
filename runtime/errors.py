"""The errors kanet raises for bad input, bad models and missing hardware (torch-free, so every package can use it)."""
from __future__ import annotations


class KanetError(Exception):
    """Base of every error caused by the user's input or machine: `kanet` prints the message as one line and
    exits with `exit_status`."""

    exit_status = 2  # bad input


class DehazeError(KanetError):
    """The model, the frames or this machine cannot do what was asked; the message says why and what to do."""


class OutputError(DehazeError):
    """An output could not be written once work had started (disk full, a file size limit): the run failed,
    the input was fine."""

    exit_status = 1
