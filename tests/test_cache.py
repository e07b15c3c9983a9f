"""One user cache folder (export.cache): --cache-dir, else $KANET_CACHE_DIR, else $XDG_CACHE_HOME/kanet, else
~/.cache/kanet; never the working folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from export import ExportError
from export.cache import user_cache_dir

ENGINE_FLAGS = ("--compute-capability", "SM89", "--min", "1x64x64", "--opt", "1x64x64", "--max", "1x64x64")


def test_the_flag_wins_then_the_variable_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KANET_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert user_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("KANET_CACHE_DIR")
    assert user_cache_dir() == tmp_path / "xdg" / "kanet"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid under the XDG rules: ignored
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "kanet"
    assert (tmp_path / "home" / ".cache" / "kanet").is_dir()


def test_an_unusable_cache_folder_is_an_error_saying_how_to_choose_another(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ExportError, match="cannot create it.*--cache-dir or \\$KANET_CACHE_DIR"):
        user_cache_dir(tmp_path / "file" / "cache")


def _build(tiny_onnx: Path, cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", "build", str(tiny_onnx), "--out", str(cwd.parent / "out"),
                           *ENGINE_FLAGS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_build_caches_in_the_named_folder_and_leaves_the_working_folder_empty(tiny_onnx, tmp_path, how):
    pytest.importorskip("tensorrt_rtx")
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    env = {**os.environ, "KANET_CACHE_DIR": str(cache if how == "variable" else tmp_path / "unused")}
    done = _build(tiny_onnx, cwd, *(["--cache-dir", str(cache)] if how == "flag" else []), env=env)
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []
    assert len(list((cache / "engines").glob("kanet_fp16_*.plan"))) == 1
    again = _build(tiny_onnx, cwd, "--cache-dir", str(cache), env=env)
    assert "reused from cache" in again.stdout


def test_build_with_an_unusable_cache_folder_says_so_in_one_line(tiny_onnx, tmp_path):
    # --cache-dir below a file is refused while parsing (kanet.cli.path_option); the variable only when used
    (tmp_path / "file").write_text("not a folder")
    env = {**os.environ, "KANET_CACHE_DIR": str(tmp_path / "file" / "cache")}
    done = _build(tiny_onnx, tmp_path, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("kanet build: error: cache folder") and len(done.stderr.strip().splitlines()) == 1
