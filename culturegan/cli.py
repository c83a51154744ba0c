"""The `culturegan` command line."""

from __future__ import annotations

import argparse
import json
import logging

from culturegan import __version__  # (culturegan's __init__ imports no torch: --help stays instant)

# `transfer`'s options for --input images (argparse dests), which --latents refuses
IMAGE_OPTIONS = ("target_culture", "reference", "strength", "source_culture", "size", "keep_size", "tile", "overlap",
                 "dtype", "batch_size", "side_by_side", "quality")
LATENT_NOISE_DEFAULT = "projected"


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"culturegan {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and results only: no progress "
                                                                      "messages, no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debugging messages too")


def _configure_output(args: argparse.Namespace) -> None:
    """Results go to standard output (print); culturegan's log messages, plain, and its progress
    bars (on a terminal) go to standard error."""
    from culturegan import _progress

    package = logging.getLogger("culturegan")
    package.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    if not any(isinstance(handler, _progress.LogHandler) for handler in package.handlers):
        handler = _progress.LogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    _progress.show_progress_bars(not args.quiet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="culturegan", description=__doc__)
    _add_global_options(parser)
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
    clean.add_argument("--workers", type=int, metavar="N",
                       help="processes decoding the images (0 or 1: none, decode in this one; default: one per "
                            "usable CPU core, at most 8); the manifest does not depend on it")
    separation = data_commands.add_parser(
        "separation", help="which feature groups (colour, texture, line) tell the cultures apart: cross-validated "
                           "nearest-profile accuracy per group")
    separation.add_argument("root", help="the dataset folder, holding one sub-folder per culture")
    separation.add_argument("--cultures", help="comma-separated culture names (default: every sub-folder)")
    separation.add_argument("--size", type=int, default=128, help="images are resized and centre-cropped to this")
    separation.add_argument("--folds", type=int, default=2, help="cross-validation folds")
    separation.add_argument("--manifest", help="use only the images a `culturegan data clean` manifest keeps")
    synth = data_commands.add_parser(
        "synth", help="write the procedural culture dataset (ink_wash, ukiyoe, impressionist, kente, and photo "
                      "content images): a stand-in for real culture folders, for demos and tests")
    synth.add_argument("root", help="the folder to write ROOT/<culture>/NNNNN.png into")
    synth.add_argument("--n", type=int, default=200, help="images per culture")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--sample-photos", action="store_true",
                       help="also write scikit-image's colour sample photographs to ROOT/sample_photos "
                            "(needs scikit-image)")
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
    _add_model_commands(commands)
    _add_blend_command(commands)
    _add_project_command(commands)
    _add_evaluation_commands(commands)
    _add_serve_command(commands)
    args = parser.parse_args(argv)
    _configure_output(args)
    if args.command == "train":
        return _train(args, parser)
    if args.command == "doctor":
        from culturegan import doctor

        return doctor.main()
    if args.command == "evaluate":
        return _evaluate(args, parser)
    if args.command == "plot":
        return _plot(args, parser)
    if args.command == "demo":
        return _demo(args, parser)
    if args.command == "transfer":
        return _transfer(args, parser)
    if args.command == "convert":
        return _convert(args, parser)
    if args.command == "generate":
        return _generate(args, parser)
    if args.command == "blend":
        return _blend(args, parser)
    if args.command == "project":
        return _project(args, parser)
    if args.command == "serve":
        return _serve(args, parser)
    if args.command == "data":
        return {"clean": _clean, "separation": _separation, "synth": _synth}[args.data_command](args, parser)
    parser.error(f"unknown command {args.command}")
    return 2


def _add_model_commands(commands) -> None:
    transfer = commands.add_parser("transfer", help="transfer images or folders of images with a trained generator")
    transfer.add_argument("--checkpoint", required=True,
                          help="a generator: CycleGAN .pth, converted .safetensors, or a culturegan run/checkpoint")
    inputs = transfer.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--input", help="an image file or a folder of images (recursively)")
    inputs.add_argument("--latents", metavar="DIR",
                        help="a folder of codes `culturegan project` wrote: render each with --checkpoint, a StyleGAN2 "
                             "generator of the base model's num_ws and w_dim (e.g. a blend of it), into a new or "
                             "empty --output folder; the image options below do not apply")
    transfer.add_argument("--latent-noise", choices=("projected", "const"), default=LATENT_NOISE_DEFAULT,
                          help="with --latents: the codes' own noise maps (default) or the generator's (NVlabs')")
    transfer.add_argument("--output", "--out", required=True, help="the folder to write to (never the input folder)")
    transfer.add_argument("--target-culture", help="the culture to transfer to (multi-culture generators; or a "
                                                   "two-culture run's source, to go backwards)")
    transfer.add_argument("--reference", metavar="IMAGE|FOLDER",
                          help="steer a multi-culture generator by the culture features of an image, or of a folder "
                               "of images (their mean style code), instead of --target-culture")
    transfer.add_argument("--strength", type=float, default=1.0,
                          help="how far toward the target, from 0 (the inputs unchanged) to 1 (the full transfer, "
                               "default): multi-culture generators interpolate the style code from "
                               "--source-culture's, others blend pixels")
    transfer.add_argument("--source-culture", help="the culture the inputs are in (multi-culture generators; needed "
                                                   "for a --strength between 0 and 1)")
    size = transfer.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="resize so that the shorter side is SIZE pixels first")
    size.add_argument("--keep-size", action="store_true", help="process at the input's size (the default)")
    transfer.add_argument("--tile", type=int, help="run images larger than TILE pixels in overlapping tiles "
                                                   "(a multiple of 4; for images too big for memory)")
    transfer.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels, blended")
    transfer.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    transfer.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on cuda, fp32 on cpu")
    transfer.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    transfer.add_argument("--side-by-side", action="store_true", help="write input and output side by side")
    transfer.add_argument("--quality", type=int, default=95, help="JPEG and lossy WebP quality, 1-100 (JPEG also "
                                                                  "keeps full-resolution colour)")
    # what --latents refuses: any image option not at its default
    transfer.set_defaults(image_option_defaults={dest: transfer.get_default(dest) for dest in IMAGE_OPTIONS})
    convert = commands.add_parser("convert", help="convert a CycleGAN .pth, an NVlabs StyleGAN2 .pkl (or a culturegan "
                                                  "run) to culturegan's format: .safetensors with a JSON model card")
    convert.add_argument("input", help="the weights file, NVlabs snapshot, run or checkpoint")
    convert.add_argument("output", help="the .safetensors file to write (its card goes beside it as .json)")
    convert.add_argument("--source-culture", help="the culture the generator transfers from (for the card)")
    convert.add_argument("--target-culture", help="the culture the generator transfers to (for the card)")
    convert.add_argument("--generator", "--network", choices=("G_AB", "G_BA", "G_ema", "G", "D"),
                         help="which network: G_AB or G_BA of a two-culture run; G_ema (default), G or D of an NVlabs "
                              "StyleGAN2 snapshot")
    generate = commands.add_parser("generate", help="images from a StyleGAN2 generator, one PNG per seed "
                                                    "(seedNNNN.png, NVlabs' images for NVlabs' seeds) and grid.png")
    generate.add_argument("--checkpoint", required=True,
                          help="an NVlabs .pkl snapshot, a converted .safetensors or a StyleGAN2 state_dict")
    generate.add_argument("--seeds", required=True, help="seeds and ranges of seeds, e.g. 0-7,10,12 (0 to 2**32-1)")
    generate.add_argument("--truncation", type=float, default=1.0,
                          help="truncation psi: 1 none (default), 0.7 NVlabs' usual, 0 the average image")
    generate.add_argument("--noise-mode", default="const", help="const (default), random or none")
    generate.add_argument("--class", dest="class_index", type=int, metavar="IDX",
                          help="the class of a conditional generator")
    generate.add_argument("--network", choices=("G_ema", "G"), help="which generator of a snapshot (default G_ema)")
    generate.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    generate.add_argument("--no-grid", action="store_true",
                          help="write the seeds' images only, no grid.png (which shows the first 64)")
    generate.add_argument("--out", required=True,
                          help="the folder to write (replaced as a whole; new, empty or an earlier generate's)")


def _add_blend_command(commands) -> None:
    blend = commands.add_parser("blend", help="layer swapping: a StyleGAN2 generator with the low-resolution layers "
                                              "of one model and the high-resolution layers of another")
    blend.add_argument("--structure", required=True, help="the generator whose layers at resolutions <= R are kept "
                                                          "(and its mapping, w_avg and noise): .pkl, .safetensors")
    blend.add_argument("--rendering", required=True, help="the generator whose layers above R are taken")
    blend.add_argument("--resolution", type=int, required=True, metavar="R",
                       help="the swap resolution: a block resolution, from 4 to the generators' own")
    blend.add_argument("--width", type=float, metavar="W",
                       help="blend smoothly: a logistic over W layer positions (2 per resolution) centred on the "
                            "switch; default: the hard switch")
    blend.add_argument("--out", required=True, help="the .safetensors file to write (its card goes beside it as "
                                                    ".json, the grid as <stem>_blend_grid.png)")
    blend.add_argument("--grid-seeds", default="0-3", help="the grid's columns: seeds, e.g. 0-3 (default)")
    blend.add_argument("--grid-resolutions", metavar="R1,R2,...",
                       help="the grid's rows between the two sources: the blend at these swap resolutions "
                            "(default: those of 8,16,32,64 below the generators' resolution)")
    blend.add_argument("--class", dest="class_index", type=int, metavar="IDX",
                       help="the class the grid shows, for conditional generators")


def _add_project_command(commands) -> None:
    project = commands.add_parser("project", help="find the StyleGAN2 codes (W or W+) of photos, NVlabs' projector "
                                                  "with an offline distance; `transfer --latents` renders them")
    project.add_argument("--checkpoint", required=True, help="the base StyleGAN2 generator: .pkl, .safetensors")
    project.add_argument("--input", required=True, nargs="+", metavar="PATH",
                         help="photos: image files and folders (searched recursively); each is centre-cropped to a "
                              "square and resized to the generator's resolution")
    project.add_argument("--out", required=True, help="the folder to write, new or empty: per photo its code "
                                                      "(.safetensors) and image (.png), and grid.png")
    project.add_argument("--steps", type=int, default=1000, help="optimisation steps per photo (default 1000)")
    project.add_argument("--w-plus", action="store_true", help="one w per layer (W+) instead of one for all (W)")
    project.add_argument("--perceptual", metavar="FILE",
                         help="a TorchScript feature network (torch.jit.save), e.g. NVlabs' vgg16.pt, added to the "
                              "distance; nothing is downloaded. A TorchScript file is a program and is run: give "
                              "only files you trust")
    project.add_argument("--culture-weight", type=float, default=1.0,
                         help="weight of the culture-feature distance (default 1; 0: none, a faster search)")
    project.add_argument("--seed", type=int, default=303, help="the seed of the noise maps and the jitter (default "
                                                               "303, NVlabs')")
    project.add_argument("--batch-size", type=int, metavar="N",
                         help="photos searched at once (default: 8 at 256 px, 2 at 512, 1 at 1024)")
    project.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")


def _add_serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="a web page to transfer photos with a trained generator: upload, pick "
                                              "the culture, download (needs the extra: pip install "
                                              "'culturegan[web]')")
    serve.add_argument("--checkpoint", required=True,
                       help="a generator: CycleGAN .pth, converted .safetensors, or a culturegan run/checkpoint")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    serve.add_argument("--port", type=int, default=7860, help="the port to listen on (default 7860)")
    serve.add_argument("--max-pixels", type=int, help="the largest upload, in pixels (width x height; default 2048 x "
                                                      "2048): larger ones get a message in the page")
    serve.add_argument("--tile", type=int, help="run images larger than TILE pixels in overlapping tiles "
                                                "(a multiple of 4; bounds the memory a large upload takes)")
    serve.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    serve.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on cuda, fp32 on cpu")


def _add_evaluation_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="transfer a culture's held-out images and measure their cultural "
                                                    "consistency; writes an HTML report, PNGs and report.json")
    evaluate.add_argument("--checkpoint", required=True, nargs="+", metavar="CHECKPOINT",
                          help="a culturegan run or checkpoint, or a generator file (a StyleGAN2 model too); several: "
                               "one setting's seeds, reported as mean and spread")
    evaluate.add_argument("--data", required=True, help="the held-out culture folders (ROOT/<culture>/...)")
    evaluate.add_argument("--source", required=True, help="the culture whose images are transferred")
    evaluate.add_argument("--target", required=True, help="the culture they are transferred to")
    evaluate.add_argument("--out", required=True, help="the report folder")
    evaluate.add_argument("--reference", help="the culture folders the culture classifiers are fitted on (the "
                                              "training folders; default: --data)")
    evaluate.add_argument("--size", type=int, help="images are resized and centre-cropped to this (default 128; "
                                                   "a StyleGAN2 model's resolution)")
    evaluate.add_argument("--count", type=int, help="evaluate the first COUNT source images only")
    evaluate.add_argument("--device", choices=("cuda", "cpu"))
    stylegan2 = evaluate.add_argument_group("StyleGAN2 models (photos projected into the base model, rendered by "
                                            "the evaluated one)")
    stylegan2.add_argument("--base", help="the model to project photos into (default: the run's init_from; a "
                                          "blend: its model that makes --source images; a run from scratch or "
                                          "another file: the model itself)")
    stylegan2.add_argument("--projection-steps", type=int, help="search steps per photo (default 1000, NVlabs')")
    stylegan2.add_argument("--w-plus", action="store_true", help="search W+ (a w per layer) instead of W")
    stylegan2.add_argument("--projection-batch", type=int, metavar="N",
                           help="photos searched at once (default: 8 at 256 px, 2 at 512, 1 at 1024)")
    plot = commands.add_parser("plot", help="training curves of one or more runs, overlaid: every loss, the "
                                            "learning rate, images/s and the held-out evaluations, as a PNG")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="a training run folder (holding metrics.jsonl)")
    plot.add_argument("--out", default="curves.png", metavar="FILE.png", help="the PNG to write (default: "
                                                                              "curves.png)")
    plot.add_argument("--smooth", type=int, metavar="N",
                      help="draw each loss as the mean of its last N records over the raw values (default 10; "
                           "1: raw only); the learning rate, images/s and evaluations are drawn as logged")
    demo = commands.add_parser("demo", help="the main job: procedural culture data, two small culture-aware "
                                            "trainings (with and without the culture loss), evaluation, report")
    demo.add_argument("--out", default="culturegan-demo", help="where to write data, runs and the report")
    demo.add_argument("--target", default="ukiyoe", help="the culture to transfer photos to")
    demo.add_argument("--steps", type=int, help="training steps per run (default 400)")
    demo.add_argument("--size", type=int, help="image side (default 64)")
    demo.add_argument("--seeds", type=int, default=3, help="training runs per setting, with seeds 0..SEEDS-1; "
                                                           "every number is reported as mean and spread (default 3)")
    demo.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    demo.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")


def _evaluate(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.evaluation import check_evaluable, evaluate, write_report

    given = {"base": args.base, "steps": args.projection_steps, "w_plus": args.w_plus or None,
             "batch_size": args.projection_batch}
    projection = {key: value for key, value in given.items() if value is not None} or None
    try:
        # every checkpoint checked before any is evaluated (an evaluation can take hours), and of one kind:
        # a setting's seeds are one model trained with several seeds
        kinds = {check_evaluable(checkpoint, args.target, args.size, projection, args.count, args.source)[1]
                 for checkpoint in args.checkpoint}
        if len(kinds) > 1:
            raise ValueError("the checkpoints are one setting's seeds: give StyleGAN2 models or image-to-image "
                             "generators, not both")
        evaluations = [evaluate(checkpoint, args.data, args.source, args.target, args.reference, args.size,
                                args.count, args.device, projection=projection) for checkpoint in args.checkpoint]
        report = write_report({f"{args.source} -> {args.target}": evaluations}, args.out)
    except (OSError, ValueError) as error:  # OSError: --out is a file, or not writable
        parser.exit(2, f"culturegan evaluate: {error}\n")
    for index, evaluation in enumerate(evaluations):
        seed = f" (checkpoint {index + 1})" if len(evaluations) > 1 else ""
        for warning in evaluation.results["verdicts"].values():
            print(f"warning{seed}: {warning}")
    print(f"report: {report}")
    return 0


def _plot(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.training.curves import plot_runs

    options = {} if args.smooth is None else {"smooth": args.smooth}
    try:
        path = plot_runs(args.runs, args.out, **options)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan plot: {error}\n")
    print(f"curves: {path}")
    return 0


def _demo(args, parser: argparse.ArgumentParser) -> int:
    import dataclasses

    from culturegan import demo
    from culturegan.datasets import CULTURES

    if args.target not in CULTURES:
        parser.exit(2, f"culturegan demo: --target must be one of {', '.join(CULTURES)}\n")
    changes = {k: v for k, v in (("steps", args.steps), ("size", args.size)) if v is not None}
    if args.seeds < 1:
        parser.exit(2, f"culturegan demo: --seeds must be >= 1, got {args.seeds}\n")
    settings = dataclasses.replace(demo.DemoSettings(), target=args.target, device=args.device, **changes)
    report, met = demo.run(args.out, settings, args.seeds)
    # the targets are the demo's result: printed, so that --quiet keeps them (the report holds them too)
    for target in json.loads((report.parent / "targets.json").read_text()):
        print(f"{'met' if target['met'] else 'MISSED'}: {target['target']} ({target['measured']})")
    print(f"report: {report}")
    return 1 if args.check and not met else 0


def _transfer(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.transfer import Stylizer, transfer_files
    from culturegan.transfer.writing import check_quality

    if args.latents is not None:
        return _render_latents(args, parser)
    if args.latent_noise != LATENT_NOISE_DEFAULT:
        parser.exit(2, "culturegan transfer: --latent-noise applies to --latents, not to --input images\n")
    try:
        check_quality(args.quality)  # before the model loads
        stylizer = Stylizer(args.checkpoint, args.target_culture, args.device, args.dtype, args.tile, args.overlap,
                            batch_size=args.batch_size, reference=args.reference, strength=args.strength,
                            source_culture=args.source_culture)
        report = transfer_files(stylizer, args.input, args.output, args.size, args.side_by_side, quality=args.quality)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan transfer: {error}\n")
    print(report.summary())
    return 1 if report.failed else 0


def _convert(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.models import convert

    cultures = {k: v for k, v in (("source", args.source_culture), ("target", args.target_culture)) if v}
    try:
        path, card = convert(args.input, args.output, cultures or None, args.generator)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan convert: {error}\n")
    print(f"{card['description']}: {card['parameters']:,} parameters in {card['tensors']} tensors -> {path}")
    return 0


def _blend(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.transfer.blend import blend_files, parse_resolutions
    from culturegan.transfer.generate import parse_seeds

    try:
        grid_resolutions = None if args.grid_resolutions is None else parse_resolutions(args.grid_resolutions)
        model, grid = blend_files(args.structure, args.rendering, args.resolution, args.out, args.width,
                                  parse_seeds(args.grid_seeds), grid_resolutions, args.class_index)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan blend: {error}\n")
    print(f"wrote the blend to {model} (card {model.with_suffix('.json')}) and its grid to {grid}")
    return 0


def _project(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.transfer.project import project_files

    try:
        codes = project_files(args.checkpoint, args.input, args.out, args.steps, args.w_plus, args.perceptual,
                              args.seed, args.device, batch_size=args.batch_size, culture_weight=args.culture_weight)
    except (OSError, ValueError) as error:  # OSError: the output folder changed during the search
        parser.exit(2, f"culturegan project: {error}\n")
    print(f"wrote {len(codes)} code(s), their images and grid.png to {args.out}")
    return 0


def _render_latents(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.transfer.project import render_codes

    given = ["--" + dest.replace("_", "-") for dest, default in args.image_option_defaults.items()
             if getattr(args, dest) != default]
    try:
        if given:
            raise ValueError(f"{', '.join(given)} apply to --input images, not to --latents")
        paths = render_codes(args.checkpoint, args.latents, args.output, args.latent_noise, args.device)
    except (OSError, ValueError) as error:  # OSError: the output folder changed while rendering
        parser.exit(2, f"culturegan transfer: {error}\n")
    print(f"rendered {len(paths)} code(s) to {args.output}")
    return 0


def _generate(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.transfer.generate import GRID_TILES, generate_images, parse_seeds

    try:
        paths = generate_images(args.checkpoint, parse_seeds(args.seeds), args.out, args.truncation, args.noise_mode,
                                args.class_index, args.network, args.device, grid=not args.no_grid)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan generate: {error}\n")
    images = len(paths) - (0 if args.no_grid else 1)
    grid = "" if args.no_grid else " and grid.png" + (f" (the first {GRID_TILES})" if images > GRID_TILES else "")
    print(f"wrote {images} images{grid} to {args.out}")
    return 0


def _serve(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.serve import serve

    try:
        serve(args.checkpoint, args.host, args.port, args.max_pixels, args.device, args.dtype, args.tile)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as error:
        parser.exit(2, f"culturegan serve: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C while starting; once it serves, gradio takes Ctrl-C and returns
        return 130
    return 0


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
        report = clean(args.root, args.min_side, args.near_duplicate_distance, args.workers, progress=True)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan data clean: {error}\n")
    manifest = write_manifest(report, args.manifest or Path(args.root) / MANIFEST_NAME)
    print(report.summary())
    print(f"manifest: {manifest}")
    return 0


def _synth(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.datasets import write_dataset

    try:
        root = write_dataset(args.root, args.n, args.size, args.seed, progress=True, sample_photos=args.sample_photos)
    except ValueError as error:
        parser.exit(2, f"culturegan data synth: {error}\n")
    print(f"wrote {args.n} images per culture to {root}")
    return 0


def _separation(args, parser: argparse.ArgumentParser) -> int:
    from culturegan.culture import folder_separation

    cultures = [c.strip() for c in args.cultures.split(",")] if args.cultures else None
    try:
        result = folder_separation(args.root, cultures, args.size, args.folds, args.manifest)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"culturegan data separation: {error}\n")
    print(result.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
