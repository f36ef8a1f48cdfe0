"""The error policy of the command-line tools (``python -m training.full``, ``tardis-export``, ``tardis-edge``).

A user's mistake or a fault of the machine ends in ONE line on stderr — what, where (file / row / value), why,
and the fix — and a documented exit code; a traceback only with ``--debug`` or for a real bug. Library code raises
ordinary typed errors (``ValueError`` and its subclasses for bad input, ``FileNotFoundError``/``FileExistsError``
for paths, ``OSError`` for the machine); ``run_cli`` translates them.

Exit codes (the same for the three tools):

    0    done
    1    a bug: the traceback is printed; please report it
    2    bad input: a missing or malformed file, an unknown option or config key, a value out of range, a folder
         that holds another run or earlier results
    3    tardis-export only: an exported graph failed a verification gate (the report says which)
    4    the machine: disk full, read-only folder, no permission, file-size limit
    130  interrupted (Ctrl-C); what was written so far is complete
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER = 2
EXIT_THRESHOLD = 3
EXIT_ENVIRONMENT = 4
EXIT_INTERRUPTED = 130

# errno values that mean "the machine", not "the input": the fix is space, permissions or another folder.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO}


class UserError(ValueError):
    """Bad input that the user can fix; the message says how."""


def describe_os_error(exc: OSError) -> str:
    """``path: what went wrong; the fix`` for an OSError from the machine."""
    where = exc.filename or ""
    what = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: "free some space or write elsewhere (--out)",
        errno.EDQUOT: "free some space or write elsewhere (--out)",
        errno.EFBIG: "the file-size limit was reached (ulimit -f); raise it or write elsewhere",
        errno.EROFS: "the folder is read-only; write elsewhere (--out)",
        errno.EACCES: "no permission; fix the folder's permissions or write elsewhere (--out)",
        errno.EPERM: "not permitted; fix the folder's permissions or write elsewhere (--out)",
        errno.EIO: "the disk reported an I/O error; check the device",
    }
    fix = fixes.get(exc.errno or -1, "check the path")
    return f"{where}: {what}; {fix}" if where else f"{what}; {fix}"


def classify(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception that reached a command-line tool."""
    if isinstance(exc, KeyboardInterrupt):  # a tool may say what it kept: KeyboardInterrupt("interrupted; ...")
        if exc.args and isinstance(exc.args[0], str):
            return EXIT_INTERRUPTED, exc.args[0]
        return EXIT_INTERRUPTED, "interrupted; what was written so far is complete (run the same command to resume)"
    if isinstance(exc, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)):
        return EXIT_USER, str(exc) if not exc.filename or str(exc.filename) in str(exc) else describe_os_error(exc)
    if isinstance(exc, OSError):
        if exc.errno in ENVIRONMENT_ERRNOS or exc.errno is None:
            return EXIT_ENVIRONMENT, describe_os_error(exc) if exc.errno else str(exc)
        return EXIT_ENVIRONMENT, describe_os_error(exc)
    if isinstance(exc, (ValueError, KeyError)):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return EXIT_USER, str(message)
    if isinstance(exc, ImportError):
        return EXIT_USER, str(exc)
    return EXIT_BUG, f"{type(exc).__name__}: {exc}"


def run_cli(prog: str, body: Callable[[], int], debug: bool | None = None) -> int:
    """Run a tool's ``body`` under the error policy; ``debug`` (or ``TARDIS_DEBUG=1``) re-raises instead."""
    if debug is None:
        debug = os.environ.get("TARDIS_DEBUG") == "1"
    try:
        return body()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - this is the one place that decides what the user sees
        if debug:
            raise
        code, message = classify(exc)
        if code == EXIT_BUG:
            traceback.print_exc()
            print(
                f"{prog}: internal error (a bug, please report it with the traceback above): {message}", file=sys.stderr
            )
        else:
            first_line = " ".join(message.split()) or type(exc).__name__
            print(f"{prog}: error: {first_line}", file=sys.stderr)
        return code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the policy's one-line errors: ``PROG: error: MESSAGE (see PROG --help)`` and exit 2, instead of
    the usage text followed by the error (subcommand parsers made by ``add_subparsers`` inherit it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USER)
