"""`culturegan serve`: a web page that applies a trained generator to uploaded photos.

Upload a photo, pick the target culture (for a multi-culture generator also a reference image,
and the photo's own culture for strengths below 1), see input and output side by side, and
download the result as PNG. The page is built with gradio (the optional extra
``culturegan[web]``); only this module imports it, so the rest of culturegan never needs it.

Every upload is checked before it is decoded: a file that is not an image, or one with more
pixels than the server's limit (read off its header, so a 200-megapixel file costs nothing),
gets a message in the page, and the server goes on serving. The page writes no files of its
own: gradio keeps uploads and results in its cache folder, which the browser downloads from.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from culturegan.data import ImageReadError, open_image
from culturegan.models.loading import Run, load_run
from culturegan.transfer import Stylizer

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2048 * 2048
# An image within the pixel limit fits in this many bytes a pixel even uncompressed (16-bit
# RGBA); larger uploads are refused by the server before they reach the disk.
MAX_BYTES_PER_PIXEL = 8
METADATA_BYTES = 1 << 20  # EXIF, ICC profiles and thumbnails on top of the pixels
CACHE_CHECK_SECONDS, CACHE_KEEP_SECONDS = 600, 3600  # how often and after how long gradio drops uploads and results


@dataclasses.dataclass(frozen=True)
class Upload:
    """A file the browser sent: where the server keeps it, and its name on the user's machine
    (the one messages name)."""

    path: Path
    name: str


@dataclasses.dataclass(frozen=True)
class Controls:
    """What the loaded model lets the page offer."""

    targets: list[str]  # the cultures it transfers to, its default first; [] for a file that names none
    cultures: list[str]  # a multi-culture generator's cultures (the photo's own culture); [] for others
    reference: bool  # a multi-culture generator with a reference projection: a reference image can steer it


class PageTransfer:
    """The page's work without the page: a loaded model, the controls it supports, and
    transfer() for one upload.

    Args:
        checkpoint: anything culturegan.transfer.Stylizer reads (a generator file, a training run
            or checkpoint).
        max_pixels: the largest width x height an upload (photo or reference) may have.
        device, dtype, tile: as culturegan.transfer.Stylizer's.
    """

    def __init__(self, checkpoint: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                 device: str | None = None, dtype: str | None = None, tile: int | None = None):
        if max_pixels < 1 or max_pixels > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"max_pixels must be in 1..{Image.MAX_IMAGE_PIXELS:,} (above that Pillow refuses images "
                             f"as decompression bombs), got {max_pixels:,}")
        self.max_pixels = max_pixels
        self.run = load_run(checkpoint)
        self.controls = _controls(self.run)
        self._settings = {"device": device, "dtype": dtype, "tile": tile}
        # built once here so that a bad device, dtype, tile or model fails at start, not at the first upload
        self.card = self._stylizer(self.controls.targets[0] if self.controls.targets else None).card

    def _stylizer(self, target: str | None, strength: float = 1.0, source: str | None = None,
                  reference: Path | None = None) -> Stylizer:
        # a new Stylizer for each request: the run's tensors are in memory, and building its
        # generator takes a fraction of a second against seconds for a transfer
        return Stylizer(self.run, target, **self._settings, reference=reference, strength=strength,
                        source_culture=source)

    def describe(self) -> str:
        """One line for the page's header: the file, the generator and where it transfers to."""
        targets = f"; transfers to {', '.join(self.controls.targets)}" if self.controls.targets else ""
        return f"{self.run.path.name}: {self.card['description']}{targets}"

    def transfer(self, photo: Upload, target: str | None = None, strength: float = 1.0, source: str | None = None,
                 reference: Upload | None = None) -> Image.Image:
        """The photo transferred to `target`, or to the culture of `reference` (which replaces
        the target), at `strength` from the photo's own culture `source` (see Stylizer)."""
        picture = open_upload(photo, self.max_pixels)
        if reference is not None:
            open_upload(reference, self.max_pixels)  # checked here, read again by the Stylizer
            target = None
        return self._stylizer(target, strength, source, None if reference is None else reference.path).image(picture)


def _controls(run: Run) -> Controls:
    directions = run.directions
    cultures = next(iter(directions.values())).get("all", [])
    targets = cultures or [served["target"] for served in directions.values() if "target" in served]
    _, card = run.generator_state()
    architecture = card["architecture"]
    multi = architecture["kind"] == "multi_generator"
    return Controls(targets, cultures, multi and architecture["feature_dim"] is not None)


def open_upload(upload: Upload, max_pixels: int) -> Image.Image:
    """The uploaded image, decoded (EXIF orientation applied) only after its header shows at most
    `max_pixels` pixels; ValueError (ImageReadError) naming the upload otherwise."""
    try:
        with Image.open(upload.path) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as error:  # Pillow refuses to open it at all
        raise ValueError(f"{upload.name} has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; this server takes "
                         f"images of at most {_megapixels(max_pixels)}: resize it and upload it again") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{upload.name} is not an image culturegan can read: upload a PNG, JPEG, WebP, BMP or "
                             "TIFF file") from error
    if width * height > max_pixels:
        raise ValueError(f"{upload.name} is {width} x {height} pixels ({_megapixels(width * height)}); this server "
                         f"takes images of at most {_megapixels(max_pixels)}: resize it and upload it again")
    try:
        return open_image(upload.path)
    except ImageReadError as error:
        raise ImageReadError(f"{upload.name} is damaged or truncated: its pixels cannot be decoded "
                             f"({error.__cause__})") from error


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"


def check_port(host: str, port: int) -> None:
    """ValueError unless a server can listen on host:port (free, and an address of this machine)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ValueError(f"cannot listen on {host}: {error.strerror}") from error
    with socket.socket(family, kind, protocol) as probe:
        # as uvicorn binds: a port whose last connections are still closing (TIME_WAIT) is free to it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ValueError(_unavailable(host, port, error)) from error


def _unavailable(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another server?): stop it, or choose another --port"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def _gradio():
    try:
        import gradio
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("the web page needs gradio: pip install 'culturegan[web]'") from error
    return gradio


def build_page(transfer: PageTransfer):
    """The gradio Blocks of the page (not yet launched)."""
    gr = _gradio()
    controls = transfer.controls
    with gr.Blocks(title="culturegan", analytics_enabled=False,
                   delete_cache=(CACHE_CHECK_SECONDS, CACHE_KEEP_SECONDS)) as page:
        gr.Markdown(f"## culturegan\n{transfer.describe()}")
        with gr.Row(equal_height=True):
            photo = gr.Image(label="Photo", sources=["upload", "clipboard"], elem_id="photo")
            result = gr.Image(label="Result", format="png", interactive=False, buttons=["download"],
                              elem_id="result")
        with gr.Row():
            target = gr.Dropdown(controls.targets, value=controls.targets[0] if controls.targets else None,
                                 label="Target culture", visible=bool(controls.targets), elem_id="target")
            strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength", elem_id="strength",
                                 info="0: the photo unchanged, 1: the full transfer")
            source = gr.Dropdown(controls.cultures, value=None, label="The photo's culture", elem_id="source",
                                 info="needed for a strength below 1", visible=bool(controls.cultures))
            reference = gr.Image(label="Reference (optional: its culture replaces the target)",
                                 sources=["upload"], visible=controls.reference, elem_id="reference")
        button = gr.Button("Transfer", variant="primary", elem_id="transfer")
        # a message stays until closed; it is the user's mistake, not the server's: no traceback in the log
        page_error = functools.partial(gr.Error, duration=None, print_exception=False)
        # preprocess=False: the handler gets the uploads' file records (gradio has checked that their
        # paths lie in its upload folder) and opens each file itself; gradio's preprocessing would
        # open them first, answering a non-image or a decompression bomb with its own errors
        button.click(_handler(transfer, page_error), [photo, target, strength, source, reference], result,
                     preprocess=False, api_name="transfer", concurrency_limit=1)
    return page


def _handler(transfer: PageTransfer, page_error: Callable[[str], Exception]):
    """The Transfer button's function: raw gradio values in, the result image out; every refusal
    becomes `page_error`, which gradio shows in the page."""

    def transfer_upload(photo: dict | None, target: str | None, strength: float, source: str | None,
                        reference: dict | None) -> Image.Image:
        if photo is None:
            raise page_error("upload a photo first")
        try:
            return transfer.transfer(_upload(photo), target, strength, source,
                                     None if reference is None else _upload(reference))
        except (FileNotFoundError, ValueError) as error:
            raise page_error(str(error)) from error
        except torch.OutOfMemoryError as error:
            raise page_error("out of memory for this image: upload a smaller one (or restart culturegan serve with "
                             "--tile 512)") from error

    return transfer_upload


def _upload(record: dict) -> Upload:
    """An Upload from gradio's record of an uploaded file (its FileData: path, orig_name, ...),
    whose path gradio has checked to lie in its upload folder."""
    path = Path(record["path"])
    return Upload(path, record.get("orig_name") or path.name)


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, max_pixels: int | None = None,
          device: str | None = None, dtype: str | None = None, tile: int | None = None, block: bool = True):
    """Serves the page for `checkpoint` on http://host:port/ until interrupted (block=False:
    returns the running gradio Blocks at once; its close() stops it). Raises ValueError for a
    port in use or a bad setting, ModuleNotFoundError without gradio, FileNotFoundError."""
    _gradio()  # before anything else: without it nothing below is of use
    check_port(host, port)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    transfer = PageTransfer(checkpoint, max_pixels, device, dtype, tile)
    page = build_page(transfer)
    try:
        # quiet: gradio's own banner suggests share=True, a public link this command never makes
        page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                    max_file_size=max_pixels * MAX_BYTES_PER_PIXEL + METADATA_BYTES)
    except OSError as error:  # the port was taken between check_port and now
        raise ValueError(_unavailable(host, port, error)) from error
    logger.info("serving %s on %s (Ctrl-C stops it)", transfer.run.path, page.local_url)
    if block:
        page.block_thread()  # until Ctrl-C, which closes the server
    return page
