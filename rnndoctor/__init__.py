"""rnndoctor: tells you why your recurrent network will not train, and what to change."""

from ._version import __version__
from .diagnose import diagnose  # noqa: E402
from .finding import Diagnosis, Finding, Severity, Skipped  # noqa: E402
from .report.assertion import FindingAssertionError  # noqa: E402
from .run import Run, RunDirError, load_run  # noqa: E402
from .watch import Watch, watch  # noqa: E402

__all__ = [
    "Diagnosis",
    "Finding",
    "FindingAssertionError",
    "Run",
    "RunDirError",
    "Severity",
    "Skipped",
    "Watch",
    "__version__",
    "diagnose",
    "load_run",
    "watch",
]
