"""Atomic writes: a killed run never leaves a half-written checkpoint, cache manifest or output file.

Nothing here imports torch at module level (the edge runtime uses it without torch).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any written file
        os.replace(tmp, p)
    except OSError as exc:
        if exc.filename is None or exc.filename == str(tmp):  # name the file the user knows, not our temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(p)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` through a temporary file (load back with ``torch.load(..., weights_only=True)``)."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as "[enforce fail at inline_container.cc] unexpected pos":
            # say what it is (a full disk or a file-size limit), as any other failed write does.
            if "unexpected pos" in str(exc) or "failed writing" in str(exc):
                raise OSError(
                    errno.ENOSPC, "no space left on device (or a file-size limit) while writing", str(path)
                ) from None
            raise
