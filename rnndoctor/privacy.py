"""What a run directory may say about the machine and the command line.

Run directories are shared: uploaded as CI artifacts, attached to bug reports. So what we
write into them shows paths relative to the working directory (or ``~``), never the
absolute working directory itself; leaves our own frames and runpy's out of tracebacks;
and hides secrets passed on the command line: the values of options whose names say
secret (``--token``, ``--api-key``, ``PASSWORD=...``) and values shaped like well-known
tokens are always replaced, and ``--redact-args`` / ``watch(redact_args=True)`` replaces
every argument.
"""

from __future__ import annotations

import os
import re
import runpy
import traceback
from pathlib import Path

REDACTED = "<redacted>"
#: option or variable names whose value is a secret
_SECRET_NAME = re.compile(r"(?i)(token|secret|passw|pwd|api[-_]?key|access[-_]?key|private[-_]?key|auth|credential|cookie|session[-_]?id)")
#: values shaped like tokens of common services, whatever option carries them
_SECRET_VALUE = re.compile(
    r"^(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|sk-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)$"
)
def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed
        return ""


#: the working directory paths are shown relative to: the one rnndoctor started in (the
#: script it runs may chdir; the user reads paths from where they typed the command)
START_DIR = _cwd()
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep
_RUNPY = (os.path.dirname(runpy.__file__) + os.sep + "runpy.py", "<frozen runpy>")


def redact_args(args: list[str], *, everything: bool = False) -> list[str]:
    """``args`` with secrets replaced by ``<redacted>`` (every argument when ``everything``)."""
    if everything:
        return [REDACTED] * len(args)
    shown: list[str] = []
    hide_next = False
    for arg in args:
        arg = str(arg)
        if hide_next and not arg.startswith("-"):
            shown.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, sep, value = arg.partition("=")
        if sep and _SECRET_NAME.search(name):
            shown.append(f"{name}={REDACTED}")
        elif _SECRET_VALUE.match(value if sep else arg):
            shown.append(f"{name}={REDACTED}" if sep else REDACTED)
        else:
            shown.append(arg)
            hide_next = arg.startswith("-") and not sep and bool(_SECRET_NAME.search(arg))
    return shown


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a shared report may show it: relative to the starting directory when
    inside it, ``~/...`` inside the home directory, else as it is."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    for base, shown in ((START_DIR, ""), (os.path.expanduser("~"), "~")):
        if base and base != os.sep and (text == base or text.startswith(base.rstrip(os.sep) + os.sep)):
            rel = os.path.relpath(text, base)
            return os.path.join(shown, rel) if shown else rel
    return text


def is_ours(filename: str) -> bool:
    """A traceback frame of rnndoctor itself (or of runpy, which runs the script for us)."""
    return filename.startswith(_PACKAGE_DIR) or filename in _RUNPY


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as the user's program raised it: our frames and runpy's left out,
    paths shown with ``shown_path``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not is_ours(f.filename)]
    for f in frames:
        f.filename = shown_path(f.filename)
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)
