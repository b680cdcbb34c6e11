"""``python -m rnndoctor`` is the ``rnndoctor`` command."""

from .cli import main

main()
