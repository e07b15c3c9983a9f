"""`kanet` itself: version, mistyped commands, argument errors as one line naming the right command."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from conftest import REPO, parse_error
from kanet import cli


def kanet(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_version_is_the_package_metadata_and_needs_no_torch():
    proc = kanet("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"kanet {importlib.metadata.version('kanet')}"
    probe = ("import sys\nfrom kanet.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
             "    print(e.code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.stdout.splitlines()[-1] == "0 False", proc.stdout + proc.stderr


def test_a_mistyped_command_gets_a_suggestion():
    proc = kanet("rn", "--model", "m.onnx")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["kanet: error: unknown command 'rn'; did you mean 'run'?",
                                        "see `kanet --help`"]
    far = parse_error(kanet("zzzz").stderr, "kanet")
    assert far.startswith("kanet: error: unknown command 'zzzz'; choose from info, export,"), far


def test_a_subcommand_argument_error_is_one_line_naming_that_subcommand():
    proc = kanet("export", "model.pt", "--out", "x", "--bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert parse_error(proc.stderr, "kanet export") == "kanet export: error: unrecognized arguments: --bogus"
    missing = kanet("run", "--source", "x.png")  # argparse's own subcommand errors do the same
    assert missing.returncode == 2
    assert parse_error(missing.stderr, "kanet run") == \
        "kanet run: error: the following arguments are required: --model"


@pytest.mark.parametrize("command", ["", *cli.SUBCOMMANDS])
def test_every_parser_reports_a_parse_error_as_one_line_and_keeps_its_help(command, capsys):
    head = [command] if command else []
    prog = " ".join(["kanet", *head])
    with pytest.raises(SystemExit) as stop:
        cli.main([*head, "--no-such-option"])
    assert stop.value.code == 2
    parse_error(capsys.readouterr().err, prog)
    with pytest.raises(SystemExit) as stop:
        cli.main([*head, "--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {prog} [-h]")


def test_an_unquoted_glob_gets_a_hint_to_quote_it(tmp_path):
    files = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for f in files:
        f.write_bytes(b"")
    proc = kanet("run", "--model", "m.onnx", "--source", *map(str, files))  # what `--source DIR/*.png` becomes
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = parse_error(proc.stderr, "kanet run")
    assert line.startswith(f"kanet run: error: unrecognized arguments: {files[1]} {files[2]}; 2 of them are "
                           "existing files: did the shell expand an unquoted wildcard?"), line
    assert line.endswith(f"Quote the pattern, e.g. '{tmp_path / '*.png'}'"), line
    typo = kanet("run", "--model", "m.onnx", "--source", "x.png", "--modle", str(files[0]))  # a value, no glob
    assert parse_error(typo.stderr, "kanet run") == f"kanet run: error: unrecognized arguments: --modle {files[0]}"
