"""Untrusted strings made safe for where we print them.

Module names, parameter names, exception messages, script arguments and paths come from the
user's program (or from a run directory someone shared). Printed raw, an ``ESC`` sequence in
one of them can retitle the terminal, clear it or hide text (``ESC[2J``, OSC 0), a C1
``CSI`` byte does the same on some terminals, and a NUL or other C0 byte makes an XML file
unreadable. Every string we print or write into a report passes through one of these.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, and the C1 controls (U+0080-U+009F: 0x9B is a CSI)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: what XML 1.0 forbids in a document (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` with control characters shown as ``\\x1b``-style escapes (tab and newline
    stay): safe to print to a terminal, and still says what the string held."""
    return _CONTROL.sub(_escape, str(text))


def printable_line(text: object) -> str:
    """``printable`` on one line: newlines and tabs are escaped too (table cells, headers)."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def xml_safe(text: object) -> str:
    """``text`` without anything XML 1.0 forbids (escaped as in ``printable``), so a JUnit
    file stays well-formed whatever a failure message held."""
    return _NOT_XML.sub(_escape, printable(text))


def safe_str(value: object) -> str:
    """``str(value)`` for an object of the user's (an exception whose ``__str__`` raises gets
    Python's own placeholder instead of breaking our report)."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} str() failed>"
