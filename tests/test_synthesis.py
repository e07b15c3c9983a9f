"""Haze synthesis (model, ranges, determinism), `kanet synth`, and the data folders it feeds."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, SAMPLES
from evaluation.haze_stats import MATCH_TOLERANCE, StatisticsSet, median_gaps
from evaluation.pairing import pair_key
from kanet.cli import main
from training.data import DataError, Source, paired_sources, read_rgb, split_sources
from training.data import clear_sources, validation_samples
from training.synthesis import DEGRADATIONS, HazeConfig, sky_mask, synthesize
from training.synthset import write_synthetic_set

SHARED_DATA = REPO.parent / "shared" / "data"  # the research datasets beside the checkout (never copied in)
CAMERA_PROBS = [f.name for f in dataclasses.fields(HazeConfig) if f.name.endswith("_prob") and f.name != "haze_free_prob"]
NO_CAMERA = {name: 0.0 for name in CAMERA_PROBS}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(read_rgb(SAMPLES / "cones.png"), (64, 48), interpolation=cv2.INTER_AREA)


def test_same_seed_same_haze_and_different_seed_different(photo):
    a, pa = synthesize(photo, np.random.default_rng(7))
    b, pb = synthesize(photo, np.random.default_rng(7))
    c, _ = synthesize(photo, np.random.default_rng(8))
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == photo.shape and 0.0 <= a.min() and a.max() <= 1.0
    json.dumps(pa)  # parameters are plain JSON


def test_drawn_parameters_stay_in_their_ranges(photo):
    cfg = HazeConfig()
    names = set()
    for seed in range(40):
        hazy, p = synthesize(photo, np.random.default_rng(seed), cfg)
        assert cfg.beta[0] <= p["beta"] <= cfg.beta[1]
        assert cfg.depth_near[0] <= p["depth_near"] <= cfg.depth_near[1]
        assert cfg.depth_grid[0] <= p["depth_grid"] <= cfg.depth_grid[1]
        assert all(cfg.airlight[0] - cfg.airlight_tint <= a <= cfg.airlight[1] + cfg.airlight_tint for a in p["airlight"])
        assert cfg.transmission_min <= p["transmission_mean"] <= 1.0
        for d in p["degradations"]:
            names.add(d["name"])
            if d["name"] == "gaussian_noise":
                assert cfg.noise_sigma[0] <= d["sigma"] <= cfg.noise_sigma[1]
            if d["name"] == "jpeg":
                assert cfg.jpeg_quality[0] <= d["quality"] <= cfg.jpeg_quality[1]
            if d["name"] == "gamma":
                assert cfg.gamma[0] <= d["gamma"] <= cfg.gamma[1]
        assert not np.isnan(hazy).any()
    assert names == set(DEGRADATIONS) | {"jpeg"}  # every factor shows up in 40 draws


def test_scattering_model_with_a_depth_map(photo):
    cfg = HazeConfig(**{**NO_CAMERA, "airlight_tint": 0.0, "airlight_blue": (0.0, 0.0), "airlight_variation": (0.0, 0.0)})
    depth = np.tile(np.linspace(1.0, 50.0, photo.shape[1], dtype=np.float32), (photo.shape[0], 1))  # right is far
    hazy, p = synthesize(photo, np.random.default_rng(3), cfg, depth)
    assert p["depth"] == "map" and p["degradations"] == []
    lo, hi = np.percentile(depth, (1, 99))
    d = p["depth_near"] + (1 - p["depth_near"]) * np.clip((depth - lo) / (hi - lo), 0, 1)
    t = np.maximum(np.exp(-p["beta"] * d), cfg.transmission_min)[..., None]
    expected = photo * t + np.array(p["airlight"], np.float32) * (1 - t)
    np.testing.assert_allclose(hazy, expected, atol=1e-5)
    # Far pixels sit closer to the airlight than near ones.
    gap = np.abs(hazy - np.array(p["airlight"])).mean(axis=(0, 2))
    assert gap[-8:].mean() < gap[:8].mean()


def test_haze_free_samples_keep_the_scene_and_come_at_their_rate(photo):
    clear, p = synthesize(photo, np.random.default_rng(0), HazeConfig(**{**NO_CAMERA, "haze_free_prob": 1.0}))
    assert p["beta"] == 0.0 and np.array_equal(clear, photo)
    cfg = HazeConfig(**{**NO_CAMERA, "haze_free_prob": 0.3})
    draws = [synthesize(photo, np.random.default_rng(seed), cfg) for seed in range(200)]
    free = [hazy for hazy, p in draws if p["beta"] == 0.0]
    assert 40 <= len(free) <= 80  # 60 expected; binomial sd 6.5
    assert all(np.array_equal(hazy, photo) for hazy in free)
    assert all(np.abs(hazy - photo).mean() > 1e-3 for hazy, p in draws if p["beta"] > 0)


def test_validation_crops_always_carry_haze():
    sources = [Source(SAMPLES / name) for name in ("cones.png", "canon.png")]
    everything_clear = HazeConfig(**{**NO_CAMERA, "haze_free_prob": 1.0})
    for hazy, clear in validation_samples(sources, 64, 0, everything_clear):
        assert (hazy - clear).abs().mean() > 1e-3  # training would have left these clear
    assert all(torch.equal(a[0], b[0]) for a, b in zip(validation_samples(sources, 64, 0, everything_clear),
                                                        validation_samples(sources, 64, 0, HazeConfig(**NO_CAMERA))))


def test_camera_degradations_random_order_jpeg_last(photo):
    cfg = HazeConfig(**{name: 1.0 for name in CAMERA_PROBS})
    orders = set()
    for seed in range(6):
        _, p = synthesize(photo, np.random.default_rng(seed), cfg)
        names = [d["name"] for d in p["degradations"]]
        assert sorted(names) == sorted([*DEGRADATIONS, "jpeg"]) and names[-1] == "jpeg"
        orders.add(tuple(names))
    assert len(orders) > 1


def test_config_rejects_bad_ranges_and_unknown_keys():
    with pytest.raises(ValueError, match="low <= high"):
        HazeConfig(beta=(2.0, 1.0))
    with pytest.raises(ValueError, match="probability"):
        HazeConfig(jpeg_prob=1.5)
    with pytest.raises(ValueError, match="unknown haze option"):
        HazeConfig.from_dict({"betta": [1, 2]})
    assert HazeConfig.from_dict({"beta": [0.5, 1.0]}).beta == (0.5, 1.0)


def _small_clear_dir(path):
    path.mkdir()
    for name in ("bench", "oxford"):
        image = cv2.imread(str(SAMPLES / f"{name}.png"))
        cv2.imwrite(str(path / f"{name}.png"), cv2.resize(image, (96, 72), interpolation=cv2.INTER_AREA))
    return path


def test_kanet_synth_writes_a_reproducible_paired_set(tmp_path, capsys):
    clear = _small_clear_dir(tmp_path / "clear")
    (tmp_path / "haze.yaml").write_text("haze:\n  jpeg_prob: 1.0\n")
    args = ["synth", "--clear-dir", str(clear), "--count", "5", "--size", "48", "--config", str(tmp_path / "haze.yaml")]
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--seed", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "2"]) == 0
    progress = capsys.readouterr().err  # not a terminal: whole lines, no carriage returns (issue 18)
    assert "\r" not in progress and progress.count("synth: 5/5 pairs") == 3, progress
    out = tmp_path / "a"
    names = sorted(p.name for p in (out / "hazy").iterdir())
    assert len(names) == 5 and names == sorted(p.name for p in (out / "clear").iterdir())
    records = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert [r["name"] for r in records] == names and all(r["degradations"][-1]["name"] == "jpeg" for r in records)
    assert read_rgb(out / "hazy" / names[0]).shape == (48, 48, 3)
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 48 and sheet.shape[1] > 2 * 48
    same = all((out / "hazy" / n).read_bytes() == (tmp_path / "b" / "hazy" / n).read_bytes() for n in names)
    differs = any((out / "hazy" / n).read_bytes() != (tmp_path / "c" / "hazy" / n).read_bytes() for n in names)
    assert same and differs
    assert len(paired_sources(out)) == 5  # the set trains with --paired-dir as it is
    assert main(["synth", "--clear-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("hazy, clear", [
    ("0001_0.8_0.2.jpg", "0001.png"),  # RESIDE: id_airlight_beta
    ("01_outdoor_hazy.jpg", "01_outdoor_GT.jpg"),  # O-HAZE
    ("12_hazy.png", "12_GT.png"),  # NH-HAZE, Dense-Haze
    ("scene-7.png", "scene-7.png"),  # same name
])
def test_pair_naming_conventions(hazy, clear):
    assert pair_key(hazy.rsplit(".", 1)[0]) == pair_key(clear.rsplit(".", 1)[0])


def test_paired_folders_match_split_by_scene_and_report_orphans(tmp_path):
    pixel = np.zeros((8, 8, 3), np.uint8)
    for folder, names in {"hazy": ["0001_0.8_0.2.jpg", "0001_0.9_0.1.jpg", "0002_0.8_0.2.jpg", "0003_1_0.1.jpg"],
                          "GT": ["0001.png", "0002.png", "0003.png"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / folder / name), pixel)
    sources = paired_sources(tmp_path)
    assert [(s.hazy.name, s.clear.name) for s in sources][:2] == [("0001_0.8_0.2.jpg", "0001.png"),
                                                                  ("0001_0.9_0.1.jpg", "0001.png")]
    train, val = split_sources(sources, 0.34, seed=0)
    assert len(val) >= 1 and not {s.clear for s in train} & {s.clear for s in val}
    assert split_sources([Source(tmp_path / "GT" / "0001.png")], 0.1, 0)[1] == [Source(tmp_path / "GT" / "0001.png")]
    cv2.imwrite(str(tmp_path / "hazy" / "0009_0.8_0.2.jpg"), pixel)
    with pytest.raises(DataError, match="1 hazy image"):
        paired_sources(tmp_path)


def test_sky_is_found_and_set_farthest():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.05, 0.45, (64, 80, 3)).astype(np.float32)  # textured ground
    scene[:20] = (0.75, 0.82, 0.92)  # smooth bright sky along the top
    scene[40:50, 30:40] = 0.9  # a bright patch that does not touch the top: not sky
    sky = sky_mask(scene)
    assert sky[:16].all() and not sky[24:].any()
    cfg = HazeConfig(**NO_CAMERA)
    _, p = synthesize(scene, np.random.default_rng(1), cfg)
    assert p["depth"] == "scene" and 0.2 < p["sky_fraction"] < 0.35


@pytest.mark.skipif(not (SHARED_DATA / "clear_outdoor").is_dir() or not (SHARED_DATA / "real_hazy").is_dir(),
                    reason=f"needs the clear_outdoor and real_hazy datasets in {SHARED_DATA}")
def test_default_haze_matches_real_hazy_photographs(tmp_path):
    """The default ranges were calibrated so every haze statistic's median sits near real haze's;
    the previous ranges (denser haze, more camera faults) miss on dark channel and contrast."""
    clear = [s for d in ("bsds500", "sun_hays", "urban100") for s in clear_sources(SHARED_DATA / "clear_outdoor" / d)]
    scenes = clear[::14]  # 48 scenes across the three collections
    real = StatisticsSet.of_folders("real", [SHARED_DATA / "real_hazy", SHARED_DATA / "real_hazy_more"])
    write_synthetic_set(scenes, tmp_path, len(scenes), 256, 0, HazeConfig(), progress=False)
    gaps = median_gaps(real, StatisticsSet.of_folders("synthetic", [tmp_path / "hazy"]))
    assert max(gaps.values()) <= MATCH_TOLERANCE, gaps


def test_kanet_synth_compare_real_writes_a_calibration_report(tmp_path, capsys):
    clear = _small_clear_dir(tmp_path / "clear")
    out = tmp_path / "out"
    args = ["synth", "--clear-dir", str(clear), "--count", "4", "--size", "64", "--out", str(out)]
    assert main([*args, "--compare-real", str(SAMPLES)]) == 0
    printed = capsys.readouterr().out
    assert "dark_channel" in printed and ("matches real haze" in printed or "off real haze" in printed)
    report = (out / "calibration.md").read_text()
    assert "synthetic (n=4)" in report and cv2.imread(str(out / "calibration.png")) is not None
    assert main([*args, "--compare-real", str(tmp_path / "nowhere")]) == 2
    assert "--compare-real" in capsys.readouterr().err
