"""`culturegan serve`: the page's transfer (controls per model, uploads checked before they are
decoded), the port check, and the page itself in a real headless Chromium: upload, transfer,
result of the photo's size, download, messages for bad uploads after which it goes on serving.

The page tests need gradio (`culturegan[web]`), playwright and a Chromium (Debian: `apt-get
install chromium`); without them they skip, and with CULTUREGAN_REQUIRE_WEB=1 (.ci/run, which
installs them) they fail instead."""

import io
import os
import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan import cli
from culturegan.culture import CultureFeatureExtractor
from culturegan.data import ImageReadError
from culturegan.models import MultiCultureGenerator, convert
from culturegan.serve import PageTransfer, Upload, check_port, open_upload, serve
from culturegan.transfer import Stylizer

# gradio's queue calls pandas in ways pandas 3 deprecates: not this library's to fix
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

MULTI_CULTURES = ["photo", "ink", "kente"]
PAGE_MAX_PIXELS = 10_000  # the served pages' limit: the photo is within it, BIG_SIDE^2 is not
PHOTO_SIZE, BIG_SIDE = (70, 45), 120  # (width, height)
TIMEOUT_MS = 60_000  # a transfer on a busy 2-core machine, after gradio's first request


def require_web(reason: str) -> None:
    """Skips, or under CULTUREGAN_REQUIRE_WEB=1 fails: there the page must be tested."""
    if os.environ.get("CULTUREGAN_REQUIRE_WEB") == "1":
        pytest.fail(f"CULTUREGAN_REQUIRE_WEB=1, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def gradio():
    try:
        import gradio
    except ModuleNotFoundError:
        require_web("gradio is not installed (pip install 'culturegan[web]')")
    return gradio


@pytest.fixture(scope="module")
def multi_file(tmp_path_factory):
    """A multi-culture generator with a reference projection, its style weights drawn away from
    the identity initialisation so that the target matters."""
    torch.manual_seed(0)
    generator = MultiCultureGenerator(len(MULTI_CULTURES), ngf=4, n_blocks=1, style_dim=8,
                                      feature_dim=CultureFeatureExtractor().feature_dim())
    with torch.no_grad():
        generator.blocks[0].style.weight.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("multi")
    torch.save(generator.state_dict(), folder / "multi.pth")
    path, _ = convert(folder / "multi.pth", folder / "multi.safetensors", {"all": MULTI_CULTURES})
    return path


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Files a user might upload: photo.png, reference.png, big.png (over the pages' pixel limit),
    notes.png (text), truncated.png, huge.png (a real 200-megapixel PNG, 1-bit so that it is small)."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(1)
    width, height = PHOTO_SIZE
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / "photo.png")
    stripes = (np.arange(48) // 4 % 2)[None, :, None] * np.array([200, 40, 30])
    Image.fromarray(np.broadcast_to(stripes, (40, 48, 3)).astype(np.uint8)).save(folder / "reference.png")
    Image.new("RGB", (BIG_SIDE, BIG_SIDE), (90, 120, 30)).save(folder / "big.png")
    (folder / "notes.png").write_text("a shopping list, not a picture\n")
    encoded = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(encoded, "PNG")
    (folder / "truncated.png").write_bytes(encoded.getvalue()[:len(encoded.getvalue()) // 2])
    Image.new("1", (20_000, 10_000)).save(folder / "huge.png")
    return folder


def upload(folder, name):
    return Upload(folder / name, name)


# --------------------------------------------------------------------------- the page's transfer

def test_controls_follow_what_the_model_supports(multi_file, two_culture_run, generator_file):
    multi = PageTransfer(multi_file, device="cpu").controls
    assert (multi.targets, multi.cultures, multi.reference) == (MULTI_CULTURES, MULTI_CULTURES, True)
    pair = PageTransfer(two_culture_run, device="cpu").controls
    assert (pair.targets, pair.cultures, pair.reference) == (["ukiyoe", "photo"], [], False)
    plain = PageTransfer(generator_file, device="cpu")
    assert (plain.controls.targets, plain.controls.cultures, plain.controls.reference) == ([], [], False)
    assert plain.describe() == "latest_net_G.pth: resnet_1blocks generator (ngf 4, instance norm, 3->3 channels)"


def test_transfer_is_the_stylizers_at_the_photos_size(multi_file, two_culture_run, uploads):
    photo = Image.open(uploads / "photo.png")
    pair = PageTransfer(two_culture_run, device="cpu")
    for target in ("ukiyoe", "photo"):
        result = pair.transfer(upload(uploads, "photo.png"), target)
        assert result.size == PHOTO_SIZE
        expected = Stylizer(two_culture_run, target, device="cpu").image(photo)
        assert np.array_equal(np.asarray(result), np.asarray(expected))
    multi = PageTransfer(multi_file, device="cpu")
    kente = multi.transfer(upload(uploads, "photo.png"), "kente")
    referenced = multi.transfer(upload(uploads, "photo.png"), "kente", reference=upload(uploads, "reference.png"))
    expected = Stylizer(multi_file, device="cpu", reference=uploads / "reference.png").image(photo)
    assert np.array_equal(np.asarray(referenced), np.asarray(expected))  # the reference replaced the target
    assert not np.array_equal(np.asarray(referenced), np.asarray(kente))
    unchanged = multi.transfer(upload(uploads, "photo.png"), "kente", strength=0, source="photo")
    assert np.array_equal(np.asarray(unchanged), np.asarray(photo))
    with pytest.raises(ValueError, match="give source_culture"):
        multi.transfer(upload(uploads, "photo.png"), "kente", strength=0.5)


def test_bad_uploads_are_refused_by_name_before_they_are_decoded(two_culture_run, multi_file, uploads):
    page = PageTransfer(two_culture_run, max_pixels=PAGE_MAX_PIXELS, device="cpu")
    with pytest.raises(ImageReadError, match="^notes.png is not an image culturegan can read: upload a PNG"):
        page.transfer(upload(uploads, "notes.png"))
    with pytest.raises(ValueError, match=r"^huge.png has more than 178,956,970 pixels; this server takes images of "
                                         r"at most 10,000 pixels: resize it"):
        page.transfer(upload(uploads, "huge.png"))
    with pytest.raises(ValueError, match=r"^big.png is 120 x 120 pixels \(14,400 pixels\); this server takes images "
                                         r"of at most 10,000 pixels"):
        page.transfer(upload(uploads, "big.png"))
    with pytest.raises(ImageReadError, match="^truncated.png is damaged or truncated"):
        page.transfer(upload(uploads, "truncated.png"))
    with pytest.raises(ValueError, match="^big.png is 120 x 120"):  # a reference is held to the same limit
        PageTransfer(multi_file, max_pixels=PAGE_MAX_PIXELS, device="cpu").transfer(
            upload(uploads, "photo.png"), reference=upload(uploads, "big.png"))
    assert open_upload(upload(uploads, "big.png"), BIG_SIDE**2).size == (BIG_SIDE, BIG_SIDE)  # at the limit: taken
    for bad in (0, 10**9):
        with pytest.raises(ValueError, match="max_pixels must be in 1..89,478,485"):
            PageTransfer(two_culture_run, max_pixels=bad, device="cpu")


# --------------------------------------------------------------------------- the port

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_the_port_check_names_what_is_wrong(busy_port):
    with pytest.raises(ValueError, match=f"^port {busy_port} on 127.0.0.1 is already in use"):
        check_port("127.0.0.1", busy_port)
    check_port("127.0.0.1", free_port())
    for bad in (0, 65536):
        with pytest.raises(ValueError, match=f"port must be in 1..65535, got {bad}"):
            check_port("127.0.0.1", bad)
    with pytest.raises(ValueError, match="^cannot listen on 192.0.2.1:7860: Cannot assign requested address"):
        check_port("192.0.2.1", 7860)  # TEST-NET-1: no address of this machine


def test_cli_serve_refuses_a_port_in_use_and_a_missing_model(gradio, busy_port, tmp_path, capsys):
    for port, message in ((busy_port, f"port {busy_port} on 127.0.0.1 is already in use (another server?): stop "
                                      "it, or choose another --port"),
                          (free_port(), f"model file {tmp_path / 'missing.pth'} does not exist")):
        with pytest.raises(SystemExit) as exit:
            cli.main(["serve", "--checkpoint", str(tmp_path / "missing.pth"), "--port", str(port)])
        assert exit.value.code == 2
        assert capsys.readouterr().err == f"culturegan serve: {message}\n"


# --------------------------------------------------------------------------- the page in a browser

@pytest.fixture(scope="module")
def browser(gradio):
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        require_web("playwright is not installed (pip install playwright)")
    executable = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if executable is None:
        require_web("no Chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(gradio):
    """served(checkpoint) -> the URL of its page (culturegan serve's, in this process)."""
    pages = []

    def serve_page(checkpoint):
        port = free_port()
        pages.append(serve(checkpoint, port=port, max_pixels=PAGE_MAX_PIXELS, device="cpu", block=False))
        return f"http://127.0.0.1:{port}/"

    yield serve_page
    for page in pages:
        page.close()


@pytest.fixture
def open_page(browser):
    """open_page(url) -> a fresh browser tab showing the page."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})

    def open_url(url):
        tab = context.new_page()
        tab.goto(url)
        tab.locator("#transfer").wait_for(timeout=TIMEOUT_MS)
        return tab

    yield open_url
    context.close()


def choose(tab, dropdown, option):
    tab.locator(f"#{dropdown} input").click()
    tab.locator(f"#{dropdown}").get_by_role("option", name=option, exact=True).click()


def upload_into(tab, component, path):
    tab.locator(f"#{component} input[type=file]").set_input_files(path)
    tab.locator(f"#{component} img").wait_for(timeout=TIMEOUT_MS)


def transfer_in(tab, previous=None):
    """Clicks Transfer and waits for a result image other than `previous` (its URL) to show;
    returns (its URL, its size as the browser decoded it, the image the server sends)."""
    tab.click("#transfer")
    shown = tab.wait_for_function("""previous => {
        const img = document.querySelector('#result img');
        return img && img.complete && img.naturalWidth > 0 && img.src !== previous && img.src; }""",
                                  arg=previous, timeout=TIMEOUT_MS).json_value()
    size = tab.locator("#result img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return shown, tuple(size), Image.open(io.BytesIO(tab.request.get(shown).body()))


def expected(checkpoint, uploads, **settings):
    return np.asarray(Stylizer(checkpoint, device="cpu", **settings).image(Image.open(uploads / "photo.png")))


def test_page_transfers_an_upload_shows_it_beside_the_photo_and_downloads_it(served, open_page, two_culture_run,
                                                                            uploads, tmp_path):
    tab = open_page(served(two_culture_run))
    assert tab.locator("#target").is_visible()
    assert not tab.locator("#source").is_visible() and not tab.locator("#reference").is_visible()
    upload_into(tab, "photo", uploads / "photo.png")
    url, size, result = transfer_in(tab)
    assert size == PHOTO_SIZE and np.array_equal(np.asarray(result), expected(two_culture_run, uploads))
    photo_box, result_box = tab.locator("#photo").bounding_box(), tab.locator("#result").bounding_box()
    assert photo_box["x"] + photo_box["width"] <= result_box["x"] and photo_box["y"] == result_box["y"]  # side by side
    with tab.expect_download() as download:
        tab.locator("#result a[download] button").click()
    download.value.save_as(tmp_path / "downloaded.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "downloaded.png")), np.asarray(result))
    choose(tab, "target", "photo")  # the run's reverse generator
    _, size, backward = transfer_in(tab, url)
    assert size == PHOTO_SIZE
    assert np.array_equal(np.asarray(backward), expected(two_culture_run, uploads, target_culture="photo"))


def test_page_says_what_is_wrong_with_an_upload_and_goes_on_serving(served, open_page, two_culture_run, uploads):
    tab = open_page(served(two_culture_run))
    tab.click("#transfer")
    tab.get_by_text("upload a photo first").wait_for(timeout=TIMEOUT_MS)
    for name, message in (("notes.png", "notes.png is not an image culturegan can read"),
                          ("huge.png", "huge.png has more than 178,956,970 pixels"),
                          ("big.png", "big.png is 120 x 120 pixels (14,400 pixels); this server takes images of at "
                                      "most 10,000 pixels")):
        upload_into(tab, "photo", uploads / name)
        tab.click("#transfer")
        tab.get_by_text(message).wait_for(timeout=TIMEOUT_MS)
        assert tab.locator("#result img").count() == 0
    upload_into(tab, "photo", uploads / "photo.png")
    _, size, result = transfer_in(tab)
    assert size == PHOTO_SIZE and np.array_equal(np.asarray(result), expected(two_culture_run, uploads))


def test_page_offers_a_reference_and_the_photos_culture_for_a_multi_culture_generator(served, open_page, multi_file,
                                                                                      uploads):
    tab = open_page(served(multi_file))
    assert tab.locator("#source").is_visible() and tab.locator("#reference").is_visible()
    upload_into(tab, "photo", uploads / "photo.png")
    choose(tab, "target", "kente")
    tab.locator("#strength input[type=number]").fill("0")
    tab.locator("#strength input[type=number]").press("Enter")
    choose(tab, "source", "photo")
    url, size, unchanged = transfer_in(tab)  # strength 0: the photo itself
    assert size == PHOTO_SIZE and np.array_equal(np.asarray(unchanged), np.asarray(Image.open(uploads / "photo.png")))
    tab.locator("#strength input[type=number]").fill("1")
    tab.locator("#strength input[type=number]").press("Enter")
    upload_into(tab, "reference", uploads / "reference.png")
    _, size, referenced = transfer_in(tab, url)
    assert size == PHOTO_SIZE
    assert np.array_equal(np.asarray(referenced), expected(multi_file, uploads, reference=uploads / "reference.png"))
