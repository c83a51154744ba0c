"""Atomic writes, the one way culturegan writes files: a reader (or a run resumed after a crash)
sees the old file or the whole new one, never a half-written one.

The data goes to a temporary name in the destination's own folder (a rename is atomic only
within one file system), is flushed to disk, and is renamed over the destination; the folder
is flushed too, so the rename survives a power cut. On any error the temporary is removed and
the destination is untouched. Temporaries are hidden (".NAME.RANDOM.tmp") and end in ".tmp".
They are created here, not by mkstemp/mkdtemp, and a file gets those permissions back after
its writer is done (safetensors writes its own owner-only file), so the result has the usual
permissions (the umask's), not owner-only ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path in path's folder for the caller to write one file to (with any
    library: PIL, safetensors, ...); when the block ends without error it becomes `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    # Python reads the umask only by changing it: the mode of a file created here tells it.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = temporary.stat().st_mode & 0o777
    try:
        yield temporary
        os.chmod(temporary, mode)
        _sync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync(path.parent)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text (UTF-8) to path atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, only_if_empty: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `path` for the caller to fill; when the block ends
    without error every file in it is flushed and the folder replaces `path` (an existing
    `path` is removed first: the one moment a reader finds neither). only_if_empty: an existing
    `path` is replaced only while it is an empty folder, as the caller checked before a long
    computation; if files appeared in it meanwhile, FileExistsError and nothing is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    temporary.mkdir()
    file_mode = temporary.stat().st_mode & 0o666  # the umask's, as a file created here would get
    try:
        yield temporary
        for file in temporary.iterdir():
            if file.is_file():
                os.chmod(file, file_mode)
                _sync(file)
        _sync(temporary)
        if only_if_empty:
            _remove_empty_folder(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _sync(path.parent)


def _remove_empty_folder(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} is no longer an empty folder: nothing replaced")
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:  # not empty (ENOTEMPTY or EEXIST, by platform)
        raise FileExistsError(f"files appeared in {path} while this ran: nothing replaced, nothing removed") from None


def _temporary_beside(path: Path) -> Path:
    """An unused hidden name in path's folder (random: concurrent writers never share one)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _sync(path: Path) -> None:
    """Flushes a file's or a folder's contents to disk (folders: where the system allows it)."""
    if path.is_dir():
        if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a folder to flush it
            return
        flags = os.O_RDONLY | os.O_DIRECTORY
    else:
        flags = os.O_RDONLY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
