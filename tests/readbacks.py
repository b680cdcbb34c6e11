"""Counts host read-backs of tensors, per thread, while a training loop runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

#: the Tensor methods that copy a value to the host (a device sync on CUDA)
READ_BACKS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@dataclass
class ReadBacks:
    on_main: list[str] = field(default_factory=list)  # names, in call order, on the training thread
    elsewhere: int = 0  # calls on other threads (the recorder's writer)


def count_read_backs(monkeypatch) -> ReadBacks:
    """Patch every READ_BACKS method to count its calls; ``monkeypatch.undo()`` ends it."""
    seen = ReadBacks()

    def counting(name: str):
        real = getattr(torch.Tensor, name)

        def wrapped(self, *a, **k):
            if threading.current_thread() is threading.main_thread():
                seen.on_main.append(name)
            else:
                seen.elsewhere += 1
            return real(self, *a, **k)

        return wrapped

    for name in READ_BACKS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    return seen
