"""The README's `kanet` command lines, so the README cannot drift from the tool.

Every `kanet ...` line of a fenced code block is taken as written ([optional] parts both with and
without). Every line must parse with the real parser; the cheap ones also run, in a fresh folder
that holds what the README's names refer to (photos/, hazy.mp4, models/ = the tiny export of
conftest, KA_Net_256.pth = its checkpoint), with placeholders (CKPT, DIR, CLEAR, ...) replaced.
A line that does not run here is skipped by one of the SKIPPED rules below, which name why.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import REPO, SAMPLES
from kanet.cli import build_parser, main, parse
from training.clear_images import copy_bundled

README = REPO / "README.md"


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


# (why the line only parses here, which lines): checked in order, the first that matches decides
SKIPPED = [
    ("needs an NVIDIA GPU",
     lambda argv, piped: _value(argv, "--device") not in (None, "cpu", "auto") or any(a.endswith(".plan") for a in argv)),
    ("joins a running Ray cluster (`ray start`, a head node); `--cluster local` lines run, and tests/test_cluster.py "
     "runs the rest on a real local cluster", lambda argv, piped: _value(argv, "--cluster") not in (None, "local")),
    ("needs a camera, a display or a network stream",
     lambda argv, piped: (_value(argv, "--source") or "").isdigit() or "--show" in argv or any("://" in a for a in argv)),
    ("pipes its output into another program (ffmpeg)", lambda argv, piped: piped),
    ("long: exports the 55M-parameter network (minutes on a CPU); conftest's `exported` fixture runs `kanet export` "
     "and tests/test_export.py its --no-engine form", lambda argv, piped: argv[0] in ("export", "build")),
    ("long: training, benchmarks and the demo take minutes to hours (bench --compare needs two earlier results)",
     lambda argv, piped: argv[0] in ("train", "bench", "demo")),
    ("the same command runs in tests/test_export.py::test_cli_parity_on_export_dir",
     lambda argv, piped: argv[0] == "parity" and "--export-dir" in argv),
]
OUTPUT_FLAGS = ("--output", "--out", "--report", "--summary", "--json")


def _expand(tokens: list[str]) -> list[list[str]]:
    """`a [b c] d` -> [a d], [a b c d]: every optional part once left out, once given."""
    for start, token in enumerate(tokens):
        if token.startswith("["):
            end = next(i for i in range(start, len(tokens)) if tokens[i].endswith("]"))
            inner = [t.strip("[]") for t in tokens[start:end + 1]]
            return [*_expand(tokens[:start] + tokens[end + 1:]), *_expand(tokens[:start] + inner + tokens[end + 1:])]
    return [tokens]


def readme_commands() -> list[tuple[list[str], bool]]:
    """(arguments after `kanet`, whether the line pipes its output on) for every README command line."""
    commands, fenced = [], False
    for line in README.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        text = line.strip()
        if not (fenced and re.match(r"(\.venv/bin/)?kanet(\s|$)", text)):
            continue
        tokens = shlex.split(text, comments=True)[1:]
        piped = "|" in tokens
        tokens = tokens[:tokens.index("|")] if piped else tokens
        commands += [(argv, piped) for argv in _expand(tokens)]
    return commands


COMMANDS = readme_commands()


def skip_reason(argv: list[str], piped: bool) -> str | None:
    return next((why for why, applies in SKIPPED if argv and applies(argv, piped)), None)


def _placeholders(argv: list[str], checkpoint: Path) -> list[str]:
    """CKPT, DIR, CLEAR, ... -> what the prepared folder holds; DIR by the flag (or command) it follows."""
    by_flag = {"--model": "models", "--export-dir": "models", "--hazy": "photos", "--clear": "photos", "--out": "out",
               "triton": "models"}
    out = []
    for i, token in enumerate(argv):
        if token == "CKPT":
            token = str(checkpoint)
        elif token == "DIR":
            token = by_flag[argv[i - 1]]
        elif token in ("CLEAR", "SYNTH"):
            token = {"CLEAR": "photos", "SYNTH": "synth"}[token]
        out.append(token)
    return out


def _prepare(folder: Path, checkpoint: Path, export_dir: Path) -> None:
    """photos/ (two small photographs), hazy.mp4 (a 3-frame clip), models/ and KA_Net_256.pth (the tiny export),
    data/clear (the bundled clear photographs)."""
    (folder / "photos").mkdir()
    frames = []
    for name in ("bench", "cones"):
        image = cv2.resize(cv2.imread(str(SAMPLES / f"{name}.png")), (128, 96), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / "photos" / f"{name}.png"), image)
        frames.append(image)
    with av.open(str(folder / "hazy.mp4"), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 128, 96, "yuv420p"
        for image in frames + frames[:1]:
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")))
        out.mux(video.encode(None))
    (folder / "models").symlink_to(export_dir, target_is_directory=True)
    (folder / "KA_Net_256.pth").symlink_to(checkpoint)
    copy_bundled(folder / "data" / "clear")  # what the README's training block runs before `kanet synth`


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # --help and --version end in argparse's exit
        return int(exc.code or 0)


def test_the_readme_has_command_lines_and_each_skip_rule_is_used():
    assert len(COMMANDS) >= 30
    used = {skip_reason(argv, piped) for argv, piped in COMMANDS}
    assert {why for why, _ in SKIPPED} <= used, "a skip rule no README line needs: drop it"


@pytest.mark.parametrize("argv,piped", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_every_readme_line_parses(argv, piped, capsys):
    try:
        parse(build_parser(), argv)
    except SystemExit as exc:
        assert exc.code == 0 and argv[-1] in ("--help", "--version"), capsys.readouterr().err


@pytest.mark.parametrize("argv,piped", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_cheap_readme_lines_run_as_written(argv, piped, request, tmp_path, monkeypatch, capsys):
    why = skip_reason(argv, piped)
    if why:
        pytest.skip(why)
    checkpoint, exported = request.getfixturevalue("checkpoint"), request.getfixturevalue("exported")
    _prepare(tmp_path, checkpoint, exported["dir"])
    monkeypatch.chdir(tmp_path)
    args = _placeholders(argv, checkpoint)
    code = _exit_code(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    for flag in OUTPUT_FLAGS:
        if _value(args, flag) not in (None, "-"):
            assert (tmp_path / _value(args, flag)).exists(), f"{flag} {_value(args, flag)} was not written"


def test_every_subcommand_the_readme_names_has_help(capsys):
    named = {argv[0] for argv, _ in COMMANDS if argv and not argv[0].startswith("-")}
    assert named >= {"info", "export", "build", "parity", "run", "synth", "train", "eval", "bench", "demo"}
    for command in sorted(named):
        assert _exit_code([command, "--help"]) == 0
        assert f"usage: kanet {command}" in capsys.readouterr().out
