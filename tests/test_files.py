"""culturegan._files: every file appears whole or not at all, and failures leave nothing behind."""

import os

import pytest
import torch
from safetensors.torch import save_file

from culturegan._files import atomic_directory, atomic_path, write_text


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_text_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    assert write_text(path, "first") == path and path.read_text() == "first"
    write_text(path, "second")
    assert path.read_text() == "second" and hidden(path.parent) == []


def test_results_have_the_umasks_permissions_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "report.html", "<p>")
        with atomic_path(tmp_path / "model.safetensors") as temporary:  # safetensors writes owner-only files
            save_file({"w": torch.zeros(2)}, str(temporary))
        with atomic_directory(tmp_path / "step-1") as temporary:
            (temporary / "state.json").write_text("{}")
            save_file({"w": torch.zeros(2)}, str(temporary / "model.safetensors"))
    finally:
        os.umask(umask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "step-1").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "step-1").iterdir()} == {0o644}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".tmp")
            temporary.write_text("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and hidden(tmp_path) == []


def test_atomic_directory_only_if_empty_keeps_files_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "codes"
    out.mkdir()
    with atomic_directory(out, only_if_empty=True) as temporary:  # still empty at the end: replaced
        (temporary / "a.png").write_text("a")
    assert sorted(p.name for p in out.iterdir()) == ["a.png"] and hidden(tmp_path) == []
    (tmp_path / "later").mkdir()
    with pytest.raises(FileExistsError, match="files appeared in .*later while this ran"):
        with atomic_directory(tmp_path / "later", only_if_empty=True) as temporary:
            (temporary / "a.png").write_text("a")
            (tmp_path / "later" / "precious.txt").write_text("written by someone else meanwhile")
    assert [p.name for p in (tmp_path / "later").iterdir()] == ["precious.txt"] and hidden(tmp_path) == []


def test_atomic_directory_replaces_a_folder_whole(tmp_path):
    final = tmp_path / "step-00000002"
    final.mkdir()
    (final / "stale.txt").write_text("from an earlier save")
    with atomic_directory(final) as temporary:
        (temporary / "state.json").write_text("{}")
        assert not (final / "state.json").exists()  # nothing visible before the block ends
    assert sorted(p.name for p in final.iterdir()) == ["state.json"] and hidden(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(final) as temporary:
            (temporary / "state.json").write_text('{"step": 3}')
            raise KeyboardInterrupt
    assert (final / "state.json").read_text() == "{}" and hidden(tmp_path) == []
