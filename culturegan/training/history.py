"""A training run's history, RUN/metrics.jsonl: one JSON record per line, appended by the trainer
(append_record) and read back by read_history.

Two kinds of record: a training record, {"step", each loss, "images_per_s", "lr"}, every
log_every steps; and a held-out evaluation, {"step", "eval": {measure: value}, "judge": version}
(eval_every; culturegan.metrics.HEADLINE names the measures, and "judge" the judge features'
version, culturegan.metrics.JUDGE_VERSION). An evaluation by another judge than today's (records
before 2026-12-02 name none) is read without its judge measures: its numbers are not comparable.

A run resumed from its last checkpoint repeats the steps after it, appending their records again:
the records of a step at or past a later record's step are the interrupted attempt's, and the
later ones replace them. A run killed while appending may leave a torn line: the next append ends
it first (so that the new record does not run into it), and the reader skips it with a warning,
like any line that is not a record. (Appending a line is not atomic, unlike culturegan's other
writes (culturegan._files): rewriting the whole history at every step would cost more than a torn
line, which loses one record.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from culturegan.metrics import JUDGE_MEASURES, JUDGE_VERSION

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class History:
    """A run's records in step order, each step once: `training` and `evaluations` (see the
    module docstring for their fields)."""

    folder: Path
    training: list[dict]
    evaluations: list[dict]


def evaluation_record(step: int, measures: dict[str, float]) -> dict:
    """The record of a held-out evaluation at `step`, stamped with the judge that measured it."""
    return {"step": step, "eval": measures, "judge": JUDGE_VERSION}


def append_record(folder: str | os.PathLike, record: dict) -> None:
    """Appends one record to folder/metrics.jsonl, on a line of its own."""
    with open(Path(folder) / METRICS_FILE, "a+b") as file:
        size = file.tell()  # (append mode opens at the end; every write goes there)
        if size:
            file.seek(size - 1)
        torn = size > 0 and file.read(1) != b"\n"
        file.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())


def read_history(folder: str | os.PathLike) -> History:
    """The History in folder/metrics.jsonl; FileNotFoundError when there is none."""
    folder = Path(folder)
    path = folder / METRICS_FILE
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {METRICS_FILE} (not a culturegan training run?)"
        raise FileNotFoundError(f"run folder {folder} {what}")
    records, skipped = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        record = _record(line)
        if record is not None:
            records.append(record)
        elif line.strip():
            skipped.append(number)
    if skipped:
        warnings.warn(f"{path}: skipped line(s) {', '.join(map(str, skipped))}, not metrics records (a run killed "
                      "while writing leaves a torn last line)", RuntimeWarning, stacklevel=2)
    evaluations = _latest_attempt([r for r in records if "eval" in r])
    earlier = [r["step"] for r in evaluations if r.get("judge") != JUDGE_VERSION]
    if earlier:
        warnings.warn(f"{path}: the held-out evaluations of step(s) {', '.join(map(str, earlier))} were judged by an "
                      f"earlier version of the judge features; their judge measures are left out", RuntimeWarning,
                      stacklevel=2)
    return History(folder, _latest_attempt([r for r in records if "eval" not in r]),
                   [r if r.get("judge") == JUDGE_VERSION else _without_judge(r) for r in evaluations])


def run_folder(path: str | os.PathLike) -> Path | None:
    """The training run `path` (a run, one of its checkpoints, or a file in either) belongs to:
    the nearest folder at or above it that holds metrics.jsonl; None outside any run."""
    path = Path(path)
    for folder in (path, *path.parents):
        if (folder / METRICS_FILE).is_file():
            return folder
    return None


def _record(line: str) -> dict | None:
    """The record a line holds: a JSON object with an integer "step" (and, for an evaluation, an
    object "eval"); None otherwise."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
        return None
    if "eval" in record and not isinstance(record["eval"], dict):
        return None
    return record


def _without_judge(record: dict) -> dict:
    return {**record, "eval": {k: v for k, v in record["eval"].items() if k not in JUDGE_MEASURES}}


def _latest_attempt(records: list[dict]) -> list[dict]:
    """The records with each step once: a record whose step is not past the one before it starts
    a resumed attempt, which replaces every kept record from its step on."""
    kept: list[dict] = []
    for record in records:
        while kept and kept[-1]["step"] >= record["step"]:
            kept.pop()
        kept.append(record)
    return kept
