"""What the data looks like on the data schedule: the model's input (``inputs``), each
sample's fingerprint next to its target's (``samples``), and every recurrent module's input
(``rnn_inputs``: scale, lengths, padding, initial state)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import data as data_probe
from .base import Context, Probe
from .outputs import LossCall


class InputsProbe(Probe):
    """Input statistics of the model and its RNNs, and sample fingerprints."""

    name = "inputs"
    follows = ("data",)
    signals = ("inputs", "samples", "rnn_inputs")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._fingerprint = data_probe.Fingerprinter()
        #: fingerprints of the last model call's samples, waiting for the loss's targets
        self._pending_fp: torch.Tensor | None = None
        #: the last model input and its statistics (an RNN often gets the same tensor)
        self._last_input_stats: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        self._pending_fp = None
        self._last_input_stats = None
        if not self.ctx.due("data"):
            return
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.is_floating_point():
            mode = "train" if torch.is_grad_enabled() else "eval"  # before no_grad below
            with torch.no_grad():
                batch_dim = 1 if (x.dim() == 3 and not self.ctx.model.batch_first) else 0
                xb = x.movedim(batch_dim, 0) if batch_dim else x
                self._pending_fp = self._fingerprint(xb)
                row = {"step": self.ctx.step, "mode": mode, "module": self.ctx.model.name(module)}
                stats = data_probe.input_stats(x)
                self._last_input_stats = (x, stats)
                row.update(stats)
                self.ctx.recorder.add("inputs", row, finalize=data_probe.with_all_zero)

    def loss(self, call: LossCall, grad: bool) -> None:
        fp, self._pending_fp = self._pending_fp, None
        y = call.target
        if fp is not None and y.dim() >= 1 and y.shape[0] == fp.shape[0]:
            with torch.no_grad():
                yfp = self._fingerprint(y.reshape(y.shape[0], -1).to(torch.float64))[:, 0]
            self.ctx.recorder.add("samples", {"step": self.ctx.step, "mode": "train" if grad else "eval", "x1": fp[:, 0], "x2": fp[:, 1], "y": yfp})

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        """Recurrent input as the RNN sees it: scale, constancy, lengths, initial state."""
        if not self.ctx.due("data"):
            return None
        x = data_probe.recurrent_input(module, args, kwargs)
        with torch.no_grad():
            row: dict[str, Any] = {"step": self.ctx.step, "module": name, "packed": int(isinstance(x, data_probe.PackedSequence))}
            if isinstance(x, data_probe.PackedSequence):
                t, hist = data_probe.packed_lengths(x)
                row.update(data_probe.input_stats(x.data))
            elif isinstance(x, torch.Tensor) and x.is_floating_point():
                batch_first = bool(getattr(module, "batch_first", True))
                t, hist = data_probe.padded_lengths(x, batch_first) if x.dim() >= 2 and isinstance(module, nn.RNNBase) else (1, None)
                seen = self._last_input_stats
                # the model's input often is the RNN's: its statistics are already on the device
                row.update(seen[1] if seen is not None and seen[0] is x else data_probe.input_stats(x))
            else:
                return None
            row["seq_len"] = t
            if hist is not None:
                row["length_hist"] = hist
            hx = args[1] if len(args) > 1 else (kwargs or {}).get("hx")
            states = list(data_probe.tensors_in(hx)) if hx is not None else []
            row["hx_given"] = int(bool(states))
            if states:
                row["hx_zero"] = torch.stack([(h == 0).all() for h in states]).all()
            self.ctx.recorder.add("rnn_inputs", row, finalize=data_probe.with_all_zero)
        return None
