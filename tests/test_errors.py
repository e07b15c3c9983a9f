"""Bad input never crashes: one error base, one handler in `kanet`, bugs reported as one line plus a log file."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES, parse_error
from kanet import cli


def kanet(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, command: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"kanet {command}: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_every_package_error_is_a_kanet_error():
    from evaluation.evaluate import EvalError
    from export import ExportError
    from runtime import DehazeError
    from runtime.errors import KanetError
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data import DataError
    from training.trainer import TrainingError

    for error in (EvalError, ExportError, DehazeError, CheckpointError, ConfigError, DataError, TrainingError,
                  cli.UserError):
        assert issubclass(error, KanetError), error
    # the old bases stay, so `except ValueError` around config/data/checkpoint code still works
    assert issubclass(ConfigError, ValueError) and issubclass(CheckpointError, ValueError)


def test_package_error_is_printed_by_the_one_handler(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    line = one_line_error(kanet("info", str(bad)), "info")
    assert "broken.pt: not a readable PyTorch checkpoint" in line


def test_a_bug_is_one_line_and_a_log_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "buggy_command.py").write_text(
        "def add_arguments(parser):\n    pass\n\n"
        "def run(args):\n    return {}['missing key']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "buggy", ("buggy_command", "raises a KeyError"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert cli.main(["buggy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("kanet buggy: internal error (KeyError: 'missing key')"), err
    logs = list((tmp_path / "kanet-crash").glob("buggy-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "buggy_command.py" in text


@pytest.mark.parametrize("argv", [["nosuch"], ["run", "--tile", "zz", "x.png", "--model", "m.onnx"]])
def test_argument_errors_keep_their_exit_code(argv):
    proc = kanet(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [
    ["run", "--model", "m.onnx", "--source", "x.png"],
    ["eval", "--hazy", str(SAMPLES)],
    ["parity", "kanet.pt"],
    ["bench"],
    ["demo"],
    ["train", "--clear-dir", str(SAMPLES)],
])
def test_every_command_that_runs_a_model_reads_device_the_same_way(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a command would write lands here
    assert cli.main([*argv, "--device", "gpu1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"kanet {argv[0]}: error: --device 'gpu1': expected auto, cpu, a GPU index N, cuda or "
                   "cuda:N\n"), err


def engine_copy(exported: dict, folder: Path) -> Path:
    """The exported engine and its manifest, copied so a test can damage them."""
    plan = folder / "kanet_fp16.plan"
    shutil.copyfile(exported["dir"] / "kanet_fp16.plan", plan)
    shutil.copyfile(exported["dir"] / "kanet_fp16.json", plan.with_suffix(".json"))
    return plan


@pytest.mark.parametrize("damage, problem", [
    (lambda m: '{"engine": ', "not a valid engine manifest (Expecting value"),
    (lambda m: "[1, 2]", "lacks engine.sha256, tensorrt.flavour, tensorrt.version, precision, profiles"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "tensorrt"}), "lacks tensorrt.flavour, tensorrt.version"),
    (lambda m: json.dumps({**m, "engine": "a string"}), "lacks engine.sha256 (or has the wrong type)"),
])
def test_a_damaged_engine_manifest_is_one_line(exported, tmp_path, damage, problem):
    plan = engine_copy(exported, tmp_path)
    manifest = plan.with_suffix(".json")
    manifest.write_text(damage(json.loads(manifest.read_text())))
    line = one_line_error(kanet("run", "--model", str(plan), "--source", str(SAMPLES / "bench.png"),
                                "--output", str(tmp_path / "out.png")), "run")
    assert f"{manifest}: " in line and problem in line, line


def test_an_engine_that_differs_from_its_manifest_is_refused_before_loading(exported, tmp_path):
    plan = engine_copy(exported, tmp_path)
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: TensorRT might load it and compute garbage
    plan.write_bytes(bytes(data))
    args = ("run", "--model", str(plan), "--source", str(SAMPLES / "bench.png"), "--output", str(tmp_path / "out.png"))
    line = one_line_error(kanet(*args), "run")
    assert f"{plan}: sha256 " in line and "differs from" in line and "kanet_fp16.json" in line, line
    skipped = kanet(*args, "--no-verify-engine")  # on to TensorRT: no GPU here, or a run on a GPU machine
    assert "sha256" not in skipped.stderr and "Traceback" not in skipped.stderr, skipped.stderr


def test_every_numeric_option_uses_the_checked_type():
    """Plain int/float accept nan, inf and negatives: every numeric option goes through cli.number."""
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    plain = [f"{name} {action.option_strings[0]}" for name, parser in subparsers.choices.items()
             for action in parser._actions if action.type in (int, float)]
    assert not plain, plain


@pytest.mark.parametrize("argv", [
    ["run", "--fps", "nan"], ["run", "--timeout", "inf"], ["run", "--batch", "0"], ["run", "--retries", "-1"],
    ["run", "--retry-delay", "-0.5"], ["run", "--tile-overlap", "-8"], ["run", "--max-frames", "1.5"],
    ["bench", "--budget", "0"], ["bench", "--iterations", "0"], ["bench", "--warmup", "-1"],
    ["parity", "--fp16-within-2", "1.5"], ["parity", "--fp32-max-abs", "-inf"], ["parity", "--fp16-psnr", "NaN"],
    ["export", "--workspace", "nan"], ["build", "--opt-level", "6"], ["export", "--opset", "0"],
    ["train", "--lr", "-1e-4"], ["train", "--steps", "0"], ["train", "--crop-size", "32"],
    ["synth", "--size", "8"], ["synth", "--count", "0"], ["demo", "--clip-frames", "1"], ["eval", "--max-side", "0"],
])
def test_a_bad_number_is_refused_while_parsing_naming_the_option(argv, capsys):
    command, option, value = argv
    with pytest.raises(SystemExit) as stop:
        cli.main([command, f"{option}={value}"])  # with '=': argparse takes '-inf' after a space for an option
    assert stop.value.code == 2
    line = parse_error(capsys.readouterr().err, f"kanet {command}")
    assert line.startswith(f"kanet {command}: error: argument {option}: expected ") and repr(value) in line, line


def test_good_numbers_still_parse():
    args = cli.build_parser().parse_args(["run", "--model", "m", "--source", "s", "--fps", "29.97", "--retries", "0",
                                          "--retry-delay", "0", "--batch", "4"])
    assert (args.fps, args.retries, args.retry_delay, args.batch) == (29.97, 0, 0.0, 4)
    assert cli.build_parser().parse_args(["parity", "ckpt", "--fp16-within-2", "1"]).fp16_within_2 == 1.0


# Options that take free text other than a path (devices, lists, KEY=VALUE, a title); every other option
# that takes a plain string is a path and must go through cli.path_option.
NOT_PATHS = {"--compute-capability", "--device", "--set", "--title", "--backends",
             "--pred"}  # NAME=DIR, the folder checked by kanet eval itself


def _options():
    """(command, action) for every option and positional argument of every subcommand."""
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, parser in subparsers.choices.items() for action in parser._actions
            if action.nargs != 0 and not isinstance(action, argparse._HelpAction)]


def test_every_path_option_uses_the_checked_type():
    unchecked = [f"{name} {(action.option_strings or [action.dest])[0]}" for name, action in _options()
                 if action.type is None and not action.choices and not set(action.option_strings) & NOT_PATHS]
    assert not unchecked, unchecked


def test_every_size_option_uses_the_checked_type():
    sizes = [(name, action) for name, action in _options() if "HxW" in str(action.metavar)]
    assert len(sizes) == 9  # --min/--opt/--max of export and build, run --tile, bench --resolution/--video-size
    unchecked = [f"{name} {action.option_strings[0]}" for name, action in sizes
                 if getattr(action.type, "__qualname__", "") not in ("size.<locals>.parse", "parse_tile")]
    assert not unchecked, unchecked


@pytest.mark.parametrize("argv", [
    ["export", "--opt", "1x720"], ["build", "--min", "0x64x64"], ["export", "--max", "nanx1x1"],
    ["build", "--max", "4x1088x1920x3"], ["run", "--tile", "-5"], ["run", "--tile", "12x"],
    ["run", "--tile", "big"], ["bench", "--resolution", "20x64"], ["bench", "--resolution", "720p"],
    ["bench", "--video-size", "720xabc"],
])
def test_a_bad_size_is_refused_while_parsing_naming_the_option(argv, capsys):
    command, option, value = argv
    with pytest.raises(SystemExit) as stop:
        cli.main([command, f"{option}={value}"])
    assert stop.value.code == 2
    line = parse_error(capsys.readouterr().err, f"kanet {command}")
    assert line.startswith(f"kanet {command}: error: argument {option}: expected ") and repr(value) in line, line


def test_good_sizes_still_parse():
    parse = cli.build_parser().parse_args
    args = parse(["export", "c.pt", "--out", "o", "--min", "1x64x64", "--max", "2X128X160"])
    assert (args.min, args.opt, args.max) == ((1, 64, 64), (1, 720, 1280), (2, 128, 160))  # --opt: its default
    tiles = [parse(["run", "--model", "m", "--source", "s", "--tile", t]).tile for t in ("auto", "off", "512", "540x960")]
    assert tiles == [None, 0, 512, (540, 960)]
    assert parse(["bench", "--resolution", "720x1280", "--resolution", "33x33"]).resolution == [(720, 1280), (33, 33)]


@pytest.mark.parametrize("argv", [
    ["run", "--model", "m.onnx", "--source", "a.png", "--output", "{below}/out.mp4"],
    ["run", "--model", "m.onnx", "--source", "a.png", "--output", "out", "--summary", "{below}/s.json"],
    ["export", "ckpt.pt", "--out", "{below}"], ["build", "m.onnx", "--out", "{below}/engines"],
    ["eval", "--hazy", "hazy", "--out", "{below}/report"], ["parity", "ckpt.pt", "--report", "{below}/p.json"],
    ["bench", "--out", "{below}"], ["synth", "--clear-dir", "clear", "--out", "{below}"],
    ["train", "--clear-dir", "clear", "--out", "{below}"], ["demo", "--out", "{below}"],
    ["export", "ckpt.pt", "--out", "out", "--cache-dir", "{below}/cache"],
    ["run", "--model", "{below}/m.onnx", "--source", "a.png"],
])
def test_a_path_below_a_file_is_refused_before_any_work(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    argv = [a.replace("{below}", "notes.txt/sub") for a in argv]
    option = next(argv[i - 1] for i, a in enumerate(argv) if a.startswith("notes.txt/"))
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    line = parse_error(capsys.readouterr().err, f"kanet {argv[0]}")
    assert line.startswith(f"kanet {argv[0]}: error: argument {option}: ") and "'notes.txt', which is a file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing was made


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("option, make", [
    ("--onnx", lambda d: shutil.copy(SAMPLES / "bench.png", d / "photo.onnx")),
    ("--onnx", lambda d: shutil.copy(REPO / "weights" / "README.md", d / "card.onnx")),
    ("--model", lambda d: shutil.copy(SAMPLES / "bench.png", d / "bench.png")),
    ("--onnx", lambda d: written(d / "empty.onnx", b"")),
    ("--engine", lambda d: written(d / "junk.plan", b"junk")),  # no GPU: says so; with one: no manifest
])
def test_parity_given_a_file_that_is_not_a_model_is_one_line(option, make, tmp_path):
    """Refused before the checkpoint is loaded or any check runs: stderr is that one line, exit 2."""
    model = Path(make(tmp_path))
    proc = kanet("parity", str(REPO / "weights" / "kanet_outdoor.pt"), option, str(model),
                 "--report", str(tmp_path / "parity.json"))
    line = one_line_error(proc, "parity")
    assert proc.stderr.strip() == line and str(model) in line, proc.stderr
    assert not (tmp_path / "parity.json").exists()
