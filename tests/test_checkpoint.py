"""Checkpoint loading: official format, ours, bare state_dicts, and clear failures."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from training import CheckpointError, KANet, load_checkpoint, save_checkpoint


def _same_output(a: KANet, b: KANet) -> bool:
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return torch.equal(a(x)[0], b(x)[0])


def test_official_checkpoint_round_trip(model, tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 11, "max_psnr": 30.5}, path)
    loaded = load_checkpoint(path)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert _same_output(model, loaded)  # rff_seed defaults to 0, as the fixture's


def test_bare_state_dict_round_trip(model, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    assert _same_output(model, load_checkpoint(path))


def test_our_checkpoint_stores_random_features(tmp_path):
    net = KANet(rff_seed=5).eval()
    net.block.MRFEB1.draw_rff(torch.Generator().manual_seed(99))  # features no seed reproduces
    path = save_checkpoint(net, tmp_path / "sub" / "ours.pt", step=3)
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 3 and payload["rff_seed"] == 5
    assert set(payload["rff"]) == {"block.MRFEB1.rff_weight", "block.MRFEB1.rff_bias"}
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.block.MRFEB1.rff_weight, net.block.MRFEB1.rff_weight)
    assert torch.equal(loaded.block.MRFEB1.rff_bias, net.block.MRFEB1.rff_bias)
    assert _same_output(net, loaded)
    reseeded = load_checkpoint(path, rff_seed=5)
    assert not torch.equal(reseeded.block.MRFEB1.rff_weight, net.block.MRFEB1.rff_weight)
    assert not list(tmp_path.joinpath("sub").glob(".ours.pt.*")), "temporary file left behind"


def test_strict_load_lists_missing_unexpected_and_wrong_shape(model, tmp_path):
    state = dict(model.state_dict())
    del state["Tencoder.norm1.weight"]
    state["extra.head.weight"] = torch.zeros(3)
    state["clean.conv2d.bias"] = torch.zeros(4)
    path = tmp_path / "bad_layout.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing (1): Tencoder.norm1.weight" in message
    assert "unexpected (1): extra.head.weight" in message
    assert "clean.conv2d.bias: checkpoint (4,) vs model (3,)" in message


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_file_gives_clear_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_gives_clear_error(model, tmp_path):
    path = tmp_path / "full.pth"
    torch.save(model.state_dict(), path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_checkpoint(truncated)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def test_cli_reports_bad_checkpoint_without_traceback(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"junk")
    result = subprocess.run([sys.executable, "-m", "kanet", "info", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "junk.pth: not a readable PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_release_checkpoint_halves_the_file_and_keeps_the_output(model, tmp_path):
    from training.release import release_checkpoint

    full = save_checkpoint(model, tmp_path / "full.pt", optimizer={"note": "training state"})
    effect = release_checkpoint(full, tmp_path / "release.pt", steps=3)
    assert effect["bytes"] < 0.55 * full.stat().st_size
    # weights/README.md: the FP16 rounding moves the output under a tenth of an 8-bit step (at most 3.9e-4,
    # mean 6.2e-5, on the shipped checkpoint; this seeded model: 2.5e-4, mean 2.3e-5)
    assert 0 < effect["max_abs"] <= 0.1 / 255 and effect["mean_abs"] <= 6.2e-5, effect
    payload = torch.load(tmp_path / "release.pt", weights_only=True)
    assert payload["release"] == {"steps": 3} and "optimizer" not in payload
    assert all(v.dtype in (torch.float16, torch.int64) for v in payload["model"].values())
    assert all(v.dtype == torch.float32 for v in payload["rff"].values())
    released = load_checkpoint(tmp_path / "release.pt")
    for name, buf in released.rff_buffers().items():
        assert torch.equal(buf, model.rff_buffers()[name])


def test_saved_checkpoint_is_readable_by_others(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "shared.pt")
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_intact(tmp_path):
    """A file size limit (as a full disk) stops torch.save part-way through a new last.pt: the old one is
    still there, byte for byte, and no temporary file is left beside it."""
    from conftest import REPO
    from training.checkpoint import save_payload

    last = save_payload({"step": 1, "w": torch.ones(10)}, tmp_path / "last.pt")
    before = last.read_bytes()
    code = ("import resource, signal, sys, torch\n"
            "from training.checkpoint import save_payload\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
            f"save_payload({{'step': 2, 'w': torch.zeros(1_000_000)}}, {str(last)!r})\n")  # 4 MB: fails midway
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "write_end_of_file" in result.stderr, result.stderr  # torch.save did fail
    assert last.read_bytes() == before and torch.load(last)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
