"""The `culturegan` command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="culturegan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="show versions, compiled libraries and usable backends per op")
    data = commands.add_parser("data", help="culture datasets (ROOT/<culture>/<images>)")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    clean = data_commands.add_parser("clean", help="check every image and write a manifest of what to keep; "
                                                   "never changes the images")
    clean.add_argument("root", help="the dataset folder, holding one sub-folder per culture")
    clean.add_argument("--min-side", type=int, default=64, help="reject images whose shorter side is below this")
    clean.add_argument("--near-duplicate-distance", type=int, default=4,
                       help="reject images whose 64-bit perceptual hash differs from a kept one's in at most this "
                            "many bits (0: exact perceptual matches only)")
    clean.add_argument("--manifest", help="where to write the JSON manifest (default: ROOT/culturegan-manifest.json)")
    train = commands.add_parser("train", help="train culture-aware CycleGAN translation between two cultures "
                                              "(one device, or many with torchrun)")
    train.add_argument("--config", help="a TOML (or YAML) file of training settings")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set steps=2000")
    train.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    train.add_argument("--init-from", metavar="WEIGHTS",
                       help="start from pretrained weights: a culturegan run or checkpoint, or a generator file "
                            "(.safetensors/.pth); same as --set init_from=WEIGHTS")
    train.add_argument("--freeze", metavar="PARTS",
                       help="keep generator parts fixed: encoder, blocks or blocks:K, decoder (comma-separated); "
                            "same as --set freeze=PARTS")
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args, parser)
    if args.command == "doctor":
        from culturegan import doctor

        return doctor.main()
    if args.command == "data":
        return _clean(args, parser)
    parser.error(f"unknown command {args.command}")
    return 2


def _train(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.training import Trainer, TrainingDiverged, TrainingInterrupted, load_config

    shortcuts = [f"{key}={value}" for key, value in (("init_from", args.init_from), ("freeze", args.freeze))
                 if value is not None]
    try:
        config = load_config(args.config, [*args.set, *shortcuts])
        trainer = Trainer(config, resume=args.resume)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan train: {error}\n")
    try:
        trainer.fit()
    except TrainingDiverged as error:
        parser.exit(1, f"culturegan train: {error}\n")
    except TrainingInterrupted as error:
        parser.exit(128 + 15, f"culturegan train: {error}\n")
    return 0


def _clean(args, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from culturegan.data.clean import MANIFEST_NAME, clean, write_manifest

    try:
        report = clean(args.root, args.min_side, args.near_duplicate_distance)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan data clean: {error}\n")
    manifest = write_manifest(report, args.manifest or Path(args.root) / MANIFEST_NAME)
    print(report.summary())
    print(f"manifest: {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
