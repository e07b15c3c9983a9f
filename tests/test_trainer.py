"""`kanet train` on tiny crops: checkpoints that load and export, bit-exact resume after Ctrl-C, --init, errors."""
from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import HAS_GPU, SAMPLES
from kanet.cli import main
from training import KANet, load_checkpoint
from training.checkpoint import read_checkpoint
from training.config import ConfigError, dotted, load, merge, read_file
from training.data import TrainingSet, clear_sources
from training.synthesis import HazeConfig
from training.trainer import Trainer, lr_factor, resolve_device

TINY = ["--steps", "2", "--batch-size", "2", "--crop-size", "48", "--threads", "2", "--val-every", "100",
        "--set", "data.val_size=48", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def clear_dir(tmp_path_factory) -> Path:
    """Three small clear photographs (downscaled project samples stand in for clear images)."""
    folder = tmp_path_factory.mktemp("clear")
    for name in ("bench", "cones", "pumpkins"):
        image = cv2.imread(str(SAMPLES / f"{name}.png"))
        cv2.imwrite(str(folder / f"{name}.png"), cv2.resize(image, (80, 64), interpolation=cv2.INTER_AREA))
    return folder


def _interrupt_when(path: Path) -> threading.Thread:
    """Send this process SIGINT (a real Ctrl-C) as soon as `path` appears, i.e. once training has begun."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _log(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "sec_per_step"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(clear_dir, tmp_path_factory) -> dict:
    """Run A: 2 steps straight. Run B: Ctrl-C during step 1, then --resume to step 2. Folders and last.pt payloads."""
    root = tmp_path_factory.mktemp("runs")
    a, b = root / "a", root / "b"
    assert main(["train", "--clear-dir", str(clear_dir), "--out", str(a), *TINY]) == 0
    watcher = _interrupt_when(b / "config.yaml")
    assert main(["train", "--clear-dir", str(clear_dir), "--out", str(b), *TINY]) == 130
    watcher.join()
    assert read_checkpoint(b / "last.pt")["step"] == 1
    assert main(["train", "--resume", str(b / "last.pt")]) == 0
    return {"a": a, "b": b, "last_a": read_checkpoint(a / "last.pt"), "last_b": read_checkpoint(b / "last.pt")}


def test_outputs_of_a_run(runs):
    out = runs["a"]
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "log.csv", "config.yaml"}
    config = load(read_file(out / "config.yaml"))
    assert (config.steps, config.data.crop_size, config.data.batch_size) == (2, 48, 2)
    rows = _log(out / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[-1]["val_psnr"] and rows[-1]["val_ssim"] and np.isfinite(float(rows[-1]["loss"]))
    last = runs["last_a"]
    state = last["train_state"]
    assert last["step"] == 2 and set(state) >= {"optimizer", "scheduler", "scaler", "reweighter", "rng", "ema_n_averaged"}
    # `model` is what deploys: the EMA weights, which differ from the raw weights after two steps.
    assert any(not torch.equal(last["model"][k], state["model"][k]) for k in state["model"])
    assert not list(out.glob(".*.pt.*")), "temporary checkpoint file left behind"


def test_resume_after_ctrl_c_is_bit_exact(runs):
    a, b = runs["last_a"], runs["last_b"]
    assert a["step"] == b["step"] == 2
    for key in ("model", "rff"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    sa, sb = a["train_state"], b["train_state"]
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert torch.equal(sa["reweighter"]["features"], sb["reweighter"]["features"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert _log(runs["a"] / "log.csv") == _log(runs["b"] / "log.csv")  # same losses, lr, PSNR, row for row


def test_trained_checkpoint_loads_and_exports(runs, tmp_path):
    from export.onnx_export import export_onnx

    model = load_checkpoint(runs["a"] / "best.pt")
    assert read_checkpoint(runs["a"] / "best.pt")["kind"] == "best"
    path = tmp_path / "trained.onnx"
    export_onnx(model, path, io="tensor", simplify=False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 64)).astype(np.float32)
    onnx_out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model.dehaze(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_out - ref).max() < 1e-4


def test_info_describes_the_run_checkpoints(runs):
    from training.checkpoint_info import describe_checkpoint

    last, best = describe_checkpoint(runs["a"] / "last.pt"), describe_checkpoint(runs["a"] / "best.pt")
    assert (last.format, last.step, best.format, best.step) == ("training", 2, "best", 2)
    assert last.layout_ok and best.layout_ok and last.precision == "float32"
    assert last.metadata["config"]["steps"] == 2 and last.metadata["config"]["data"]["crop_size"] == 48
    assert "train_state" not in last.metadata and 0 < best.metadata["val_psnr"] < 100
    assert last.rff.startswith("stored: redrawn in training")  # rff_redraw is on by default


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(runs, capsys):
    last = runs["a"] / "last.pt"
    before = last.read_bytes()
    assert main(["train", "--resume", str(last)]) == 0
    assert capsys.readouterr().out.strip() == f"{last}: already finished at step 2; nothing to do (--steps N above 2 trains on)"
    assert last.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "best"])
def test_unusable_resume_checkpoint_is_one_clear_error(runs, tmp_path, capsys, damage):
    if damage == "truncated":
        bad = tmp_path / "last.pt"
        bad.write_bytes((runs["a"] / "last.pt").read_bytes()[:4096])
        expected = "not a readable PyTorch checkpoint"
    else:
        bad, expected = runs["a"] / "best.pt", "deployable weights only"
    assert main(["train", "--resume", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]


def test_init_from_official_layout_checkpoint(clear_dir, tmp_path):
    torch.manual_seed(123)
    official = KANet()
    path = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.state_dict().items()}, "epoch": 7}, path)
    config = load({"init": str(path), "out": str(tmp_path / "ft"), "loss": {"contrastive": False},
                   "data": {"clear_dir": str(clear_dir), "crop_size": 48, "val_size": 48}})
    trainer = Trainer(config)
    params = dict(official.named_parameters())
    assert all(torch.equal(p, params[name]) for name, p in trainer.model.named_parameters())
    assert trainer.model.training and trainer.model.block.MRFEB1.redraw_rff


def test_samples_do_not_depend_on_loader_workers(clear_dir):
    dataset = TrainingSet(clear_sources(clear_dir), 48, seed=3, haze=HazeConfig())
    sampler = range(2, 8)
    batches = [list(torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=w)) for w in (0, 2)]
    for (h0, c0), (h1, c1) in zip(*batches):
        assert torch.equal(h0, h1) and torch.equal(c0, c1)
    hazy, clear = dataset[5]
    assert hazy.shape == clear.shape == (3, 48, 48) and 0 <= float(hazy.min()) and float(hazy.max()) <= 1
    assert not torch.equal(hazy, clear)


def test_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert factors[0] < factors[9] <= 1.0 and factors[10] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(factors[10:], factors[11:]))
    assert lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_config_files_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 5\noptim:\n  lr: 1e-4\nhaze:\n  beta: [0.5, 1.0]\n")
    (tmp_path / "c.toml").write_text("steps = 5\n[optim]\nlr = 1e-4\n[haze]\nbeta = [0.5, 1.0]\n")
    yaml_cfg, toml_cfg = (load(read_file(tmp_path / n)) for n in ("c.yaml", "c.toml"))
    assert yaml_cfg == toml_cfg and yaml_cfg.optim.lr == 1e-4 and yaml_cfg.haze.beta == (0.5, 1.0)
    merged = load(merge(read_file(tmp_path / "c.yaml"), dotted(["optim.lr=3e-4", "data.hflip=false"])))
    assert merged.optim.lr == 3e-4 and merged.data.hflip is False and merged.steps == 5
    for bad, message in [({"stepz": 1}, "unknown option"), ({"optim": {"lr": "fast"}}, "expected float"),
                         ({"haze": {"beta": [2.0, 1.0]}}, "low <= high"), ({"data": {"hflip": 1}}, "expected bool")]:
        with pytest.raises(ConfigError, match=message):
            load(bad)


def test_device_as_every_command_reads_it_and_a_config_keeps_its_own(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("device: cpu\n")
    for flags, expected in (([], "device: cpu"), (["--device", "cuda:1"], "device: cuda:1")):
        assert main(["train", "--config", str(config), "--print-config", *flags]) == 0
        assert expected in capsys.readouterr().out.splitlines()
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'99': PyTorch sees"):
        resolve_device("99")  # a GPU index, as for `kanet run --device 99`


def test_user_errors_are_one_line(clear_dir, tmp_path, capsys):
    cases = [
        (["train", "--out", str(tmp_path / "x")], "exactly one of --clear-dir"),
        (["train", "--clear-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")], "no such folder"),
        (["train", "--clear-dir", str(clear_dir), "--crop-size", "50", "--out", str(tmp_path / "x")], "multiple of 16"),
        (["train", "--clear-dir", str(clear_dir), "--set", "optim.lr", "--out", str(tmp_path / "x")], "KEY=VALUE"),
        (["train", "--clear-dir", str(clear_dir), "--batch-size", "200", "--out", str(tmp_path / "x")], "memory"),
        (["train", "--resume", str(tmp_path / "none.pt")], "no such checkpoint"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert expected in err[-1] and "Traceback" not in "".join(err), err


@pytest.mark.gpu
def test_mixed_precision_training_on_gpu(clear_dir, tmp_path):
    assert HAS_GPU
    out = tmp_path / "gpu"
    assert main(["train", "--clear-dir", str(clear_dir), "--out", str(out), "--device", "cuda", *TINY]) == 0
    rows = _log(out / "log.csv")
    assert all(np.isfinite(float(r["loss"])) for r in rows) and float(rows[-1]["val_psnr"]) > 0
    load_checkpoint(out / "last.pt")
