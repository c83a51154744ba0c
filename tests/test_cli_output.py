"""What the command line and the library show: --help and --version without torch, the ops loaded
on first use, log messages through `logging` (--quiet, --verbose), progress bars on a terminal only."""

import io
import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import culturegan
from culturegan import _progress, cli
from culturegan.culture import folder_separation
from culturegan.datasets import write_dataset
from culturegan.evaluation import evaluate
from culturegan.training import TrainConfig, Trainer

# Walks every command's and sub-command's --help (as argparse lists them in the usage line) in
# a fresh interpreter, then says which heavy modules that imported.
HELP_WALK = """
import contextlib, io, json, re, sys
from culturegan import cli

def helps(argv):
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        cli.main([*argv, "--help"])
    walked = [" ".join(argv)]
    listed = re.search(r"^  \\{([\\w,-]+)\\}$", text.getvalue(), re.M)  # "positional arguments:" lists them
    for command in listed.group(1).split(",") if listed else []:
        walked += helps([*argv, command])
    return walked

walked = helps([])
print(json.dumps({"walked": walked, "imported": [m for m in ("torch", "numpy", "PIL", "tqdm") if m in sys.modules]}))
"""


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that imports this culturegan (not the source tree: cwd elsewhere)."""
    package_root = str(Path(culturegan.__file__).resolve().parents[1])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=True)


@pytest.fixture(autouse=True)
def restore_output_settings():
    """cli.main configures the package logger and the bars for the whole process: undone after each test."""
    package = logging.getLogger("culturegan")
    level, handlers = package.level, list(package.handlers)
    yield
    package.setLevel(level)
    package.handlers[:] = handlers
    _progress.show_progress_bars(True)


class Terminal(io.StringIO):
    """A standard error that says it is a terminal, so tqdm draws its bars into it."""

    def isatty(self) -> bool:
        return True


def test_every_help_and_the_version_need_no_torch(tmp_path):
    walked = json.loads(_python(HELP_WALK, tmp_path).stdout)
    assert {"", "train", "evaluate", "demo", "data", "data separation", "data synth"} <= set(walked["walked"])
    assert walked["imported"] == [], f"--help imported {walked['imported']}"
    version = _python("from culturegan import cli; cli.main(['--version'])", tmp_path).stdout
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert version == f"culturegan {culturegan.__version__}\n" == f"culturegan {pyproject['project']['version']}\n"


def test_the_ops_load_on_first_use_and_register_for_every_user(tmp_path):
    code = """
import sys, torch
import culturegan
assert "culturegan.ops" not in sys.modules and not hasattr(torch.ops.culturegan, "bias_leaky_relu")
import culturegan.nn  # a module that calls the ops registers them itself
assert hasattr(torch.ops.culturegan, "bias_leaky_relu")
from culturegan import ops
import culturegan.ops as same
assert ops is same is culturegan.ops is sys.modules["culturegan.ops"]
assert culturegan.ops.bias_leaky_relu is ops.bias_leaky_relu and "ops" in culturegan.__all__
print("ok")
"""
    assert _python(code, tmp_path).stdout == "ok\n"
    with pytest.raises(AttributeError, match="has no attribute 'opz'"):
        culturegan.opz  # noqa: B018


def _train_argv(tmp_path: Path) -> list[str]:
    root = write_dataset(tmp_path / "data", count=4, size=40, cultures=["kente"])
    settings = [f"data_root={root}", "source=photo", "target=kente", "load_size=36", "crop_size=32", "workers=0",
                "ngf=4", "n_blocks=1", "ndf=4", "profile_size=32", "steps=2", "decay_steps=1", "log_every=1",
                "sample_every=0", "device=cpu", f"output={tmp_path / 'run'}"]
    return ["train", *[argument for setting in settings for argument in ("--set", setting)]]


def test_training_logs_its_lines_and_quiet_silences_them(tmp_path, caplog, capsys):
    argv = _train_argv(tmp_path)
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    trainer_lines = [r.getMessage() for r in caplog.records if r.name == "culturegan.training.trainer"]
    assert trainer_lines[0] == f"fitting the culture profiles of photo, kente on {tmp_path / 'data'}"
    assert [line.split(",")[0] for line in trainer_lines[1:]] == ["step 1", "step 2"]
    assert out == "" and err.splitlines() == trainer_lines  # plain messages, on standard error

    caplog.clear()
    assert cli.main(["--quiet", *argv, "--set", f"output={tmp_path / 'quiet'}"]) == 0
    assert capsys.readouterr() == ("", "") and caplog.records == []
    assert len((tmp_path / "quiet" / "metrics.jsonl").read_text().splitlines()) == 2  # the files are as before


def test_verbose_shows_debugging_messages(tmp_path):
    # in a fresh interpreter: the compiled libraries are loaded (and that logged) once per process
    code = "from culturegan import cli; cli.main(['--verbose', 'doctor'])"
    debugging = _python(code, tmp_path).stderr
    assert "compiled library _C: loaded from " in debugging, debugging


def test_global_options_come_before_the_command_and_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        cli.main(["--quiet", "--verbose", "doctor"])
    assert error.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        cli.main(["data", "synth", str(tmp_path), "--quiet"])
    assert error.value.code == 2 and "unrecognized arguments: --quiet" in capsys.readouterr().err


@pytest.fixture
def two_cultures(tmp_path):
    return write_dataset(tmp_path / "data", count=4, size=32, cultures=["ink_wash", "kente"], content=False)


def test_progress_bars_show_on_a_terminal_only(two_cultures, monkeypatch):
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        folder_separation(two_cultures, size=32)
        assert all((f"features of {culture}" in stream.getvalue()) is shown for culture in ("ink_wash", "kente"))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    folder_separation(two_cultures, size=32, progress=False)
    assert terminal.getvalue() == ""


def test_quiet_hides_the_bars_and_keeps_the_results(two_cultures, monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["--quiet", "data", "separation", str(two_cultures), "--size", "32"]) == 0
    assert terminal.getvalue() == "" and "2 cultures" in capsys.readouterr().out
    assert cli.main(["data", "separation", str(two_cultures), "--size", "32"]) == 0
    assert "features of kente" in terminal.getvalue()


def test_log_lines_are_written_above_a_progress_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = _progress.LogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("culturegan.test", logging.INFO, __file__, 1, "halfway", None, None)
    with _progress.progress_bar(total=2, desc="steps") as bar:
        bar.update()
        handler.emit(record)
        before_bar, _, after = terminal.getvalue().rpartition("halfway\n")
    # the bar was cleared, the line written on its own, the bar drawn again below it
    assert before_bar.endswith("\r") and "steps:  50%" in after


def test_training_and_evaluation_show_every_long_step_on_a_terminal_only(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "data", count=4, size=32, cultures=["kente"])
    config = TrainConfig(data_root=str(data), source="photo", target="kente", load_size=32, crop_size=32, workers=0,
                         ngf=4, n_blocks=1, ndf=4, profile_size=32, steps=1, decay_steps=0, device="cpu",
                         output=str(tmp_path / "run"), sample_every=0)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    Trainer(config).fit()
    assert all(bar in terminal.getvalue() for bar in ("features of photo", "features of kente", "1/1"))

    def bars(stream, **options) -> str:
        monkeypatch.setattr(sys, "stderr", stream)
        evaluate(tmp_path / "run", data, "photo", "kente", size=32, device="cpu", **options)
        return stream.getvalue()

    shown = bars(Terminal())
    steps = ("transferring photo to kente", "transferring back to photo", "perturbed, back to photo", "features")
    assert all(step in shown for step in steps), shown
    assert bars(io.StringIO()) == "" and bars(Terminal(), progress=False) == ""
