"""A run stopped by SIGTERM (graceful: a checkpoint after the current step) or killed by
SIGKILL (the last periodic checkpoint), then resumed, ends with the parameters of a run that
was never interrupted; a file that turns corrupt during training is skipped, not a crash."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from culturegan.training import Trainer
from test_training import dataset, parameters, tiny  # noqa: F401  (the fixture and helpers)

STEPS = 60


def _toml(config) -> str:
    # (None is a key not given, which a file says by leaving it out)
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in vars(config).items()
                   if not isinstance(value, tuple) and value is not None)


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):  # noqa: F811
    trainer = Trainer(tiny(dataset, tmp_path_factory.mktemp("straight"), steps=STEPS, decay_steps=STEPS // 2,
                           checkpoint_every=5, log_every=1))
    trainer.fit()
    return parameters(trainer)


def _start(dataset, output, workers: int = 0):  # noqa: F811
    config = tiny(dataset, output, steps=STEPS, decay_steps=STEPS // 2, checkpoint_every=5, log_every=1,
                  workers=workers)
    output.mkdir(parents=True)
    (output / "run.toml").write_text(_toml(config))
    # a session of its own: the group-wide signal test signals the run's process group only
    return subprocess.Popen([sys.executable, "-m", "culturegan", "train", "--config", str(output / "run.toml")],
                            cwd=output, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(condition, process, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _logged_steps(output) -> int:
    path = output / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _resume_and_compare(dataset, output, straight):  # noqa: F811
    resumed = Trainer(tiny(dataset, output, steps=STEPS, decay_steps=STEPS // 2, checkpoint_every=5, log_every=1),
                      resume=True)
    assert 0 < resumed.step < STEPS
    resumed.fit()
    got = parameters(resumed)
    for key in straight:
        torch.testing.assert_close(got[key], straight[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_matches(dataset, tmp_path, straight):  # noqa: F811
    output = tmp_path / "run"
    process = _start(dataset, output)
    _wait_for(lambda: _logged_steps(output) >= 2, process, "two logged steps")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    stopped_at = json.loads((output / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert stopped_at < STEPS
    assert (output / "checkpoints" / f"step-{stopped_at:08d}" / "state.json").is_file()  # the step it stopped at
    _resume_and_compare(dataset, output, straight)


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_still_checkpoints(dataset, tmp_path):  # noqa: F811
    """A batch scheduler, `timeout` or Ctrl-C signals the data workers too: they must not die of
    it before the main process saves its checkpoint."""
    output = tmp_path / "run"
    process = _start(dataset, output, workers=2)
    _wait_for(lambda: _logged_steps(output) >= 2, process, "two logged steps")
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "killed by signal" not in stderr
    stopped_at = json.loads((output / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert (output / "checkpoints" / f"step-{stopped_at:08d}" / "state.json").is_file()


@pytest.mark.slow
def test_sigkill_then_resume_from_the_last_checkpoint_matches(dataset, tmp_path, straight):  # noqa: F811
    output = tmp_path / "run"
    process = _start(dataset, output)
    _wait_for(lambda: (output / "checkpoints" / "step-00000010").is_dir(), process, "the step-10 checkpoint")
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (output / "checkpoints").iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)  # at most a half-written temporary
    _resume_and_compare(dataset, output, straight)


def test_an_image_that_turns_corrupt_during_training_is_skipped_with_a_warning(dataset, tmp_path):  # noqa: F811
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    trainer = Trainer(tiny(root, tmp_path / "run", steps=6, decay_steps=0))  # lists and profiles the images
    victim = sorted((root / "ink_wash").iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    with pytest.warns(RuntimeWarning, match=f"skipping.*{victim.name}"):
        trainer.fit()
    assert trainer.step == 6
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6
