"""Flags shared by every command that runs a model: one spelling, one help text, one parser each."""
from __future__ import annotations

from runtime.devices import DEVICE_HELP


def add_device_argument(parser, what: str = "where the model runs") -> None:
    """--device, parsed by runtime.devices.parse_device in the command (a bad value is a one-line error)."""
    parser.add_argument("--device", default="auto", metavar="auto|cpu|N|cuda:N", help=f"{what}: {DEVICE_HELP}")
