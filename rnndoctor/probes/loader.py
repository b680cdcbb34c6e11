"""The data-loader re-fetch: at a DataLoader's first iteration, a few indices of a map-style
dataset are fetched twice (``datasets``, ``refetch``): a ``__getitem__`` that redraws the
task's parameters per call gives a different sample for the same index (seed 004)."""

from __future__ import annotations

import random
from typing import Any

from . import data as data_probe
from .base import Context, Probe


class _Unpatch:
    """The loader patch as a handle the watch removes when it closes."""

    def __init__(self, patch: data_probe.LoaderPatch) -> None:
        self.patch = patch

    def remove(self) -> None:
        self.patch.__exit__(None, None, None)


class LoaderProbe(Probe):
    """Each DataLoader's dataset, once, and whether an index fetched twice gives one sample."""

    name = "loader"
    signals = ("datasets", "refetch")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        return [_Unpatch(data_probe.LoaderPatch(self._on_loader).__enter__())]

    def _on_loader(self, loader: Any) -> None:
        ds = loader.dataset
        map_style = data_probe.is_map_style(ds)
        size = len(ds) if map_style else None
        step = self.ctx.step
        self.ctx.recorder.add("datasets", {"step": step, "dataset": type(ds).__name__, "size": size, "map_style": int(map_style)})
        if not size:
            return
        rng = random.Random(0)
        indices = sorted(rng.sample(range(size), min(data_probe.REFETCH_INDICES, size)))
        for row in data_probe.refetch(ds, indices):
            row.update(step=step, dataset=type(ds).__name__)
            self.ctx.recorder.add("refetch", row)
