"""`kanet` itself: version, mistyped commands, argument errors that point at the right usage."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from conftest import REPO


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
    assert proc.stderr.splitlines() == ["usage: kanet [-h] [--version] COMMAND ...",
                                        "kanet: error: unknown command 'rn'; did you mean 'run'?"]
    far = kanet("zzzz").stderr.splitlines()[-1]
    assert far.startswith("kanet: error: unknown command 'zzzz'; choose from info, export,"), far


def test_a_subcommand_argument_error_shows_that_subcommands_usage():
    proc = kanet("export", "model.pt", "--out", "x", "--bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: kanet export [-h] "), proc.stderr
    assert proc.stderr.splitlines()[-1] == "kanet export: error: unrecognized arguments: --bogus"
    missing = kanet("run", "--source", "x.png")  # argparse's own subcommand errors keep doing the same
    assert missing.stderr.startswith("usage: kanet run ") and "kanet run: error:" in missing.stderr


def test_an_unquoted_glob_gets_a_hint_to_quote_it(tmp_path):
    files = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for f in files:
        f.write_bytes(b"")
    proc = kanet("run", "--model", "m.onnx", "--source", *map(str, files))  # what `--source DIR/*.png` becomes
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.startswith(f"kanet run: error: unrecognized arguments: {files[1]} {files[2]}; 2 of them are "
                           "existing files: did the shell expand an unquoted wildcard?"), line
    assert line.endswith(f"Quote the pattern, e.g. '{tmp_path / '*.png'}'"), line
    typo = kanet("run", "--model", "m.onnx", "--source", "x.png", "--modle", str(files[0]))  # a value, no glob
    assert typo.stderr.splitlines()[-1] == f"kanet run: error: unrecognized arguments: --modle {files[0]}"
