"""Quality scores, the dark channel prior baseline and `kanet eval`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, SAMPLES
from evaluation.dcp import dehaze_dcp, estimate_airlight
from evaluation.evaluate import evaluate, find_reference, markdown_table, scene_index
from evaluation.quality import (NearRegion, ciede2000, colour_shift, colourfulness, full_reference_scores,
                                haze_density, local_contrast)
from training.clear_images import BUNDLED


def _hazy(clear: np.ndarray, transmission: float, airlight=(0.85, 0.88, 0.9)) -> np.ndarray:
    """Atmospheric scattering model with uniform transmission: I = J t + A (1 - t)."""
    j = clear.astype(np.float64) / 255.0
    i = j * transmission + np.asarray(airlight) * (1 - transmission)
    return np.clip(i * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rocket() -> np.ndarray:
    return cv2.imread(str(BUNDLED["rocket"]), cv2.IMREAD_COLOR)


def test_no_reference_scores_order_haze(rocket):
    light, heavy = _hazy(rocket, 0.7), _hazy(rocket, 0.3)
    assert haze_density(rocket) < haze_density(light) < haze_density(heavy)
    assert local_contrast(rocket) > local_contrast(light) > local_contrast(heavy)
    assert colourfulness(rocket) > colourfulness(light) > colourfulness(heavy)
    grey = cv2.cvtColor(cv2.cvtColor(rocket, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-9)


def test_full_reference_scores(rocket):
    same = full_reference_scores(rocket, rocket)
    assert same["psnr_db"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    noisy = np.clip(rocket.astype(int) + np.random.default_rng(0).integers(-3, 4, rocket.shape), 0, 255).astype(np.uint8)
    scores = full_reference_scores(noisy, rocket)
    assert 35 < scores["psnr_db"] < 50 and 0.8 < scores["ssim"] < 1.0
    with pytest.raises(ValueError, match="differ in size"):
        full_reference_scores(rocket[:-1], rocket)


def _cast(frame: np.ndarray, bgr_gain=(0.8, 1.0, 1.25)) -> np.ndarray:
    """An orange-red colour cast, the failure the haze scores used to reward."""
    return np.clip(frame.astype(np.float64) * np.asarray(bgr_gain), 0, 255).astype(np.uint8)


def _hazy_with_depth(clear: np.ndarray, airlight=(0.85, 0.88, 0.9)) -> np.ndarray:
    """Haze thinning from the top row (t = 0.3, far) to the bottom row (t = 0.97, near)."""
    t = np.linspace(0.3, 0.97, clear.shape[0])[:, None, None]
    i = clear.astype(np.float64) / 255.0 * t + np.asarray(airlight) * (1 - t)
    return np.clip(i * 255 + 0.5, 0, 255).astype(np.uint8)


def test_colour_scores_punish_a_colour_cast(rocket):
    assert ciede2000(rocket, rocket) == pytest.approx(0.0, abs=1e-9)
    assert ciede2000(_cast(rocket), rocket) > 5
    hazy = _hazy_with_depth(rocket)
    near = NearRegion(hazy)
    assert np.nonzero(near.mask)[0].mean() > 0.75 * rocket.shape[0]  # the near quarter is at the bottom
    assert colour_shift(hazy, near) == pytest.approx(0.0, abs=1e-9)
    # The perfect restoration and DCP's barely recolour the near region; the same outputs cast do.
    for restored in (rocket, dehaze_dcp(hazy)):
        assert colour_shift(_cast(restored), near) > colour_shift(restored, near) + 4
    # Lightness alone (uniform darkening, as dehazing does) is not a colour shift.
    darker = np.clip(hazy.astype(np.float64) * 0.8, 0, 255).astype(np.uint8)
    assert colour_shift(darker, near) < 0.3 * colour_shift(_cast(hazy), near)


def test_dark_channel_prior_recovers_synthetic_haze(rocket):
    hazy = _hazy(rocket, 0.4)
    restored = dehaze_dcp(hazy)
    assert restored.shape == hazy.shape and restored.dtype == np.uint8
    before = full_reference_scores(hazy, rocket)["psnr_db"]
    after = full_reference_scores(restored, rocket)["psnr_db"]
    assert after > before + 3, (before, after)


@pytest.mark.parametrize("position", [0, 7, 100, 199])
def test_airlight_does_not_depend_on_which_tied_pixel_a_sort_keeps(position):
    """5 pixels above the 0.1% cut and 200 tied at it: the brightest tied pixel is a candidate wherever it lies."""
    dark = np.zeros(100 * 100)
    dark[:5], dark[1000:1200] = 0.9, 0.8
    image = np.full((100 * 100, 3), 0.5)
    image[:5], image[1000:1200] = 0.9, 0.8
    image[1000 + position] = (1.0, 1.0, 0.8)
    airlight = estimate_airlight(image.reshape(100, 100, 3), dark.reshape(100, 100), top_fraction=0.001)
    assert airlight.tolist() == [1.0, 1.0, 0.8]


def test_dark_channel_prior_clears_real_photographs():
    for path in sorted(SAMPLES.glob("*.png")):
        frame = cv2.imread(str(path))
        assert haze_density(dehaze_dcp(frame)) < 0.6 * haze_density(frame), path.name


def test_reference_matching_conventions(tmp_path):
    for name in ("0001.png", "canon.jpg"):
        (tmp_path / name).write_bytes(b"")
    index = scene_index(tmp_path)
    assert find_reference("0001_0.8_0.2.jpg", index) == tmp_path / "0001.png"
    assert find_reference("canon.png", index) == tmp_path / "canon.jpg"
    assert find_reference("0002_0.8.png", index) is None


def test_evaluate_pairs_and_skips(tmp_path, rocket):
    hazy_dir, clear_dir = tmp_path / "hazy", tmp_path / "clear"
    hazy_dir.mkdir(), clear_dir.mkdir()
    small = cv2.resize(rocket, (160, 107))
    cv2.imwrite(str(clear_dir / "0001.png"), small)
    cv2.imwrite(str(hazy_dir / "0001_0.4.png"), _hazy(small, 0.4))
    cv2.imwrite(str(hazy_dir / "0002_0.4.png"), _hazy(small, 0.4))   # no clear counterpart
    (hazy_dir / "0003.png").write_bytes(b"not a png")                  # unreadable
    report = evaluate(hazy_dir, {"hazy input": lambda f, n: f, "dcp": lambda f, n: dehaze_dcp(f)}, clear_dir)
    assert {r["name"] for r in report.images} == {"0001_0.4.png"}
    assert sorted(s["name"] for s in report.skipped) == ["0002_0.4.png", "0003.png"]
    means = report.means()
    assert means["dcp"]["psnr_db"] > means["hazy input"]["psnr_db"]
    # The clear image's own no-reference scores: clearer than its hazy version, nothing to compare it with.
    truth = means["clear reference"]
    assert set(truth) == {"haze_density", "local_contrast", "colourfulness", "colour_shift"}
    assert truth["haze_density"] < means["hazy input"]["haze_density"] and truth["colour_shift"] > 0
    assert "| clear reference |" in markdown_table(report, "t")


def _kanet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=REPO, capture_output=True, text=True)


def test_eval_command_writes_reports(tmp_path):
    out = tmp_path / "report"
    result = _kanet("eval", "--hazy", str(SAMPLES), "--out", str(out), "--max-side", "200", "--save-images",
                    "--pred", f"again={SAMPLES}")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval.json").read_text())
    assert set(report["means"]) == {"hazy input", "dark channel prior", "again"}
    assert report["means"]["again"] == pytest.approx(report["means"]["hazy input"], rel=1e-6)
    assert report["means"]["dark channel prior"]["haze_density"] < report["means"]["hazy input"]["haze_density"]
    assert len(list((out / "dark channel prior").glob("*.png"))) == len(list(SAMPLES.glob("*.png")))
    assert "| dark channel prior |" in (out / "eval.md").read_text()
    # stderr is a pipe here: whole progress lines, no carriage returns of a terminal bar (issue 18)
    assert "\r" not in result.stderr and f"eval: {len(list(SAMPLES.glob('*.png')))}/" in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (["--hazy", "no/such/dir"], "no/such/dir: no such folder"),
    (["--hazy", str(SAMPLES), "--pred", "x"], "expected NAME=DIR"),
    (["--hazy", str(SAMPLES), "--model", "missing.onnx"], "missing.onnx: no such model file"),
])
def test_eval_command_bad_input(tmp_path, args, message):
    result = _kanet("eval", *args, "--out", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_eval_command_says_why_no_image_was_scored(tmp_path):
    hazy, clear = tmp_path / "hazy", tmp_path / "clear"
    hazy.mkdir(), clear.mkdir()
    (hazy / "broken.png").write_bytes(b"not a png")
    shutil.copy(SAMPLES / "canon.png", hazy / "0001_0.8.png")  # its scene, 0001, has no clear image
    result = _kanet("eval", "--hazy", str(hazy), "--clear", str(clear), "--no-dcp", "--out", str(tmp_path / "out"))
    why = f"no readable clear image in {clear}: 0001_0.8.png; not a readable image: broken.png"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"kanet eval: no image could be scored: {why}", result.stderr
    assert f"No image could be scored: {why}." in (tmp_path / "out" / "eval.md").read_text()


def test_eval_command_scores_a_model_through_the_runtime(exported, frame_onnx, tmp_path):
    """KA-Net (an export folder, as `kanet run` takes it: its FP32 ONNX on the CPU) scored beside the
    baselines; its outputs are the runtime's."""
    from runtime import Dehazer

    out = tmp_path / "report"
    result = _kanet("eval", "--hazy", str(SAMPLES), "--model", str(exported["dir"]), "--device", "cpu",
                    "--out", str(out), "--max-side", "96", "--save-images")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval.json").read_text())
    assert list(report["means"]) == ["hazy input", "dark channel prior", "KA-Net"]
    saved = sorted((out / "KA-Net").glob("*.png"))
    assert len(saved) == len(list(SAMPLES.glob("*.png")))
    hazy = cv2.imread(str(out / "hazy input" / saved[0].name))
    expected = Dehazer.load(frame_onnx)(hazy)
    assert np.array_equal(cv2.imread(str(saved[0])), expected)


@pytest.mark.parametrize("given, message", [
    ("photo.png", "photo.png: not a model; expected an engine (.plan), an .onnx file or an export folder"),
    ("kanet.pt", "kanet.pt: not a model; expected an engine"),  # a checkpoint is exported first
    ("garbage.onnx", "garbage.onnx: ONNX Runtime cannot load the model"),
    ("empty", "empty: holds none of kanet_fp32.onnx, kanet_fp16.onnx"),  # a folder that is no export
    ("kanet_fp16.plan", "kanet_fp16.json: engine manifest lacks engine.sha256"),
])
def test_eval_model_that_is_not_a_model_is_one_line(checkpoint, exported, tmp_path, given, message):
    from test_errors import engine_copy, one_line_error

    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "kanet.pt").write_bytes(checkpoint.read_bytes())
    (tmp_path / "garbage.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty").mkdir()
    engine_copy(exported, tmp_path).with_suffix(".json").write_text("{}")
    line = one_line_error(_kanet("eval", "--hazy", str(SAMPLES), "--model", str(tmp_path / given), "--no-dcp",
                                 "--out", str(tmp_path / "report")), "eval")
    assert message in line, line


def test_eval_reads_and_saves_file_names_that_are_not_utf8(tmp_path, rocket):
    """Names OpenCV's path API segfaults on (not valid UTF-8) are read, paired and saved like any other."""
    hazy_dir, clear_dir, out = tmp_path / "hazy", tmp_path / "clear", tmp_path / "report"
    hazy_dir.mkdir(), clear_dir.mkdir()
    odd = os.fsdecode(b"\xff\xfe.png")
    small = cv2.resize(rocket, (64, 48))
    (clear_dir / odd).write_bytes(cv2.imencode(".png", small)[1].tobytes())
    (hazy_dir / odd).write_bytes(cv2.imencode(".png", _hazy(small, 0.5))[1].tobytes())
    result = _kanet("eval", "--hazy", str(hazy_dir), "--clear", str(clear_dir), "--no-dcp", "--save-images",
                    "--out", str(out))
    assert result.returncode == 0, (result.returncode, result.stderr)
    rows = json.loads((out / "eval.json").read_text())["images"]
    assert [r["method"] for r in rows] == ["hazy input", "clear reference"]
    saved = cv2.imdecode(np.fromfile(out / "hazy input" / odd, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(saved, _hazy(small, 0.5))
