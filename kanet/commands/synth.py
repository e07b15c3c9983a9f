"""`kanet synth --clear-dir DIR --out OUT`: a synthetic hazy/clear paired set to inspect or train on."""
from __future__ import annotations

import argparse
from pathlib import Path

from kanet.cli import UserError, number, path_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("writes OUT/hazy/NAME.png and OUT/clear/NAME.png (same names), OUT/params.jsonl (the parameters "
                     "drawn for each pair) and OUT/contact_sheet.png. OUT is a valid `kanet train --paired-dir`.")
    parser.add_argument("--clear-dir", type=path_option, required=True, metavar="DIR", help="folder of clear images (png, jpg, ...)")
    parser.add_argument("--out", type=path_option, required=True, metavar="OUT", help="output folder")
    parser.add_argument("--count", type=number(int, 1), metavar="N", help="pairs to write (default: one per clear image)")
    parser.add_argument("--size", type=number(int, 16), default=256, metavar="S", help="side of the square crops (default 256)")
    parser.add_argument("--seed", type=number(int, 0), default=0, metavar="K", help="random seed: same seed, same set (default 0)")
    parser.add_argument("--config", type=path_option, metavar="FILE",
                        help="YAML or TOML haze settings: a `haze:` section (as in a training config) or its keys "
                             "at the top level; see `kanet train --print-config` for every key and default")
    parser.add_argument("--depth-dir", type=path_option, metavar="DIR",
                        help="depth maps named like the clear images (.npy or image, larger = farther); "
                             "images without one get a depth guessed from the scene layout")
    parser.add_argument("--compare-real", type=path_option, nargs="+", metavar="DIR",
                        help="also measure haze statistics (dark channel, airlight, saturation, contrast) of the "
                             "synthetic hazy images and of the real hazy photographs under DIR..., and write "
                             "OUT/calibration.md and OUT/calibration.png side by side")


def run(args: argparse.Namespace) -> int:
    from training.config import read_file
    from training.data import clear_sources
    from training.synthesis import HazeConfig
    from training.synthset import write_synthetic_set

    try:
        values = read_file(args.config) if args.config else {}
        haze = HazeConfig.from_dict(values.get("haze", values))
        sources = clear_sources(args.clear_dir, args.depth_dir)
        count = len(sources) if args.count is None else args.count
        records = write_synthetic_set(sources, args.out, count, args.size, args.seed, haze)
    except ValueError as exc:  # HazeConfig and the haze maths reject bad values with plain ValueErrors
        raise UserError(str(exc)) from None
    print(f"{len(records)} pairs of {args.size}x{args.size} from {len(sources)} clear images in {args.out} "
          f"(contact sheet: {args.out}/contact_sheet.png)")
    if args.compare_real:
        _calibration(Path(args.out), [Path(d) for d in args.compare_real])
    return 0


def _calibration(out: Path, real_dirs: list[Path]) -> None:
    from evaluation.haze_stats import MATCH_TOLERANCE, StatisticsSet, compare, median_gaps, plot

    for folder in real_dirs:
        if not folder.is_dir():
            raise UserError(f"--compare-real {folder}: no such folder")
    try:
        real = StatisticsSet.of_folders("real hazy", real_dirs)
    except ValueError as exc:
        raise UserError(f"--compare-real: {exc}") from None
    synthetic = StatisticsSet.of_folders("synthetic", [out / "hazy"])
    table = compare(real, synthetic)
    (out / "calibration.md").write_text(f"# Synthetic haze against real hazy photographs\n\nReal: "
                                        f"{', '.join(map(str, real_dirs))}. Synthetic: {out / 'hazy'}.\n\n{table}")
    plot([real, synthetic], out / "calibration.png")
    off = [name for name, gap in median_gaps(real, synthetic).items() if gap > MATCH_TOLERANCE]
    print(table + (f"off real haze: {', '.join(off)}" if off else "every statistic matches real haze") +
          f" (calibration: {out}/calibration.md, .png)")
