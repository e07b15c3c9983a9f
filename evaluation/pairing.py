"""Which files show the same scene: the one pairing rule of training data (`kanet train --paired-dir`,
`kanet synth`) and of evaluation against clear references (`kanet eval --clear`)."""
from __future__ import annotations

import re

# Tokens that name the role of a file rather than the scene (NH-HAZE `01_hazy` / `01_GT`).
_ROLE_TOKENS = {"hazy", "haze", "gt", "clear", "clean", "target"}
_FLOAT = re.compile(r"^\d*\.?\d+$")


def pair_key(stem: str) -> str:
    """The scene a file shows: role words and trailing haze parameters dropped.

    `0001_0.8_0.2` (RESIDE: id, airlight, beta) -> `0001`; `01_outdoor_hazy` and
    `01_outdoor_GT` (O-HAZE) -> `01_outdoor`; `01_hazy` / `01_GT` (NH-HAZE) -> `01`.
    """
    tokens = [t for t in re.split(r"[_\-\s]+", stem.lower()) if t and t not in _ROLE_TOKENS] or [stem.lower()]
    while len(tokens) > 1 and _FLOAT.match(tokens[-1]):
        tokens.pop()
    return "_".join(tokens)
