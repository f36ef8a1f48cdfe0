"""Atomic writes: a killed run never leaves a half-written checkpoint, cache manifest or output file.

Nothing here imports torch at module level (the edge runtime uses it without torch).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
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


def json_safe(value: object) -> object:
    """``value`` with NaN/inf floats as None and NumPy scalars/arrays as Python numbers/lists (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # NumPy scalars and arrays
        return json_safe(value.tolist())
    return value


def strict_json(data: object, indent: int | None = 2, sort_keys: bool = False, default=None) -> str:
    """Strict JSON text of ``data`` (``allow_nan=False``): NaN and infinities are written as ``null``, so every JSON
    reader accepts the file (Python's default writes a bare ``NaN``, which is not JSON). ``default`` as in
    ``json.dumps`` (e.g. ``str`` for paths)."""
    return json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys, allow_nan=False, default=default)
