"""What the data looks like on the data schedule: the model's input (``inputs``), each
sample's fingerprint next to its target's (``samples``), and every recurrent module's input
(``rnn_inputs``: scale, lengths, padding, initial state)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from . import data as data_probe
from .base import Context, Probe
from .outputs import LossCall


#: samples fingerprinted on every step until this many are recorded (then on the data
#: schedule): a batch-size-1 program needs far more steps than a batch of 64 to show a repeat
SAMPLE_BUDGET = 2048
#: evaluation samples fingerprinted whatever the schedule: an evaluation every few epochs
#: rarely falls on a data step, and its inputs are what leakage is judged on
EVAL_SAMPLE_BUDGET = 2048
#: samples of each mode fingerprinted off the data schedule
_BUDGET = {"train": SAMPLE_BUDGET, "eval": EVAL_SAMPLE_BUDGET}


class InputsProbe(Probe):
    """Input statistics of the model and its RNNs, and sample fingerprints."""

    name = "inputs"
    follows = ("data",)
    signals = ("inputs", "samples", "rnn_inputs")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._fingerprint = data_probe.Fingerprinter()
        #: the data and targets of the group being seen (a step, or an evaluation batch)
        self._sample = data_probe.StepSample(self._fingerprint)
        self._fingerprinted = {"train": 0, "eval": 0}  # samples fingerprinted, per mode
        #: the last data tensor fingerprinted (the model's input often is the RNN's)
        self._last_data: torch.Tensor | None = None
        #: shape of the model's last input: the padded batch a packed RNN input came from
        self._model_input_shape: tuple[int, ...] | None = None
        #: whether the group's data came in through a model call (then not through its RNNs)
        self._model_fed = False
        #: the last model input and its statistics (an RNN often gets the same tensor)
        self._last_input_stats: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        #: the ``rnn_inputs`` row of the recurrent call under way, until its output is seen
        self._open_row: dict[str, Any] | None = None
        #: this step's ``rnn_inputs`` rows, recorded when the step ends: a flush may come
        #: before the backward pass that sets their ``backward`` flag
        self._step_rows: list[dict[str, Any]] = []
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        self._last_input_stats = None
        x = args[0] if args else None
        self._model_input_shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
        due = self.ctx.due("data")
        mode = "train" if torch.is_grad_enabled() else "eval"  # before no_grad below
        if self._sample.mode not in (None, mode):
            self._emit()  # a pass of the other kind closes the group, fingerprinted or not
        if isinstance(x, data_probe.PackedSequence):
            if due or self._under_budget(mode):
                with torch.no_grad():
                    self._model_fed |= self._add_packed(x, mode)
            return
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            return
        with torch.no_grad():
            if due or self._under_budget(mode):
                # the model may transpose its input before a sequence-first RNN (or take
                # token ids [T, B]): both orientations, the group keeps the one its targets fit
                self._model_fed |= self._add_data(x, self.ctx.model.batch_first, mode, either_way=True)
            if due and x.is_floating_point():
                row = {"step": self.ctx.step, "mode": mode, "module": self.ctx.model.name(module)}
                stats = data_probe.input_stats(x)
                self._last_input_stats = (x, stats)
                row.update(stats)
                if x.dim() == 3 and mode == "train" and not any(isinstance(m, nn.RNNBase) for _, m in self.ctx.model.recurrent):
                    row.update(_lengths_both_ways(x))  # a loop of the model's own slices this input
                self.ctx.recorder.add("inputs", row, finalize=data_probe.with_all_zero)

    def _under_budget(self, mode: str) -> bool:
        """Samples of ``mode`` are still fingerprinted off the data schedule."""
        return self._fingerprinted[mode] < _BUDGET[mode]

    def _add_data(self, x: torch.Tensor, batch_first: bool, mode: str, *, either_way: bool = False) -> bool:
        """Fingerprint ``x`` into the sample being seen, when it is data (no ``grad_fn``: not
        the model's own activation) and not the tensor fingerprinted last; whether it was.
        ``either_way``: a 2-D or 3-D input whose batch dimension is not known is fingerprinted
        both ways."""
        if x.grad_fn is not None or x.is_complex() or x is self._last_data:
            return False
        if self._sample.starts_new_group(mode):
            self._emit()
        self._last_data = x
        seq_first = not batch_first and x.dim() in ((2, 3) if either_way else (3,))
        rows = x.movedim(1, 0) if seq_first else x
        other = (x if seq_first else x.movedim(1, 0)) if either_way and x.dim() in (2, 3) else None
        self._sample.add_input(rows, mode, other)
        return True

    def _add_packed(self, p: "data_probe.PackedSequence", mode: str) -> bool:
        """A PackedSequence as data: its sequences padded back, in the batch's own order."""
        if p.data.grad_fn is not None or p.data.is_complex():
            return False
        padded, _ = data_probe.pad_packed_sequence(p, batch_first=True)
        return self._add_data(padded, True, mode)

    def loss(self, call: LossCall, grad: bool) -> None:
        if call.kind == "logged":  # a value without targets
            return
        with torch.no_grad():
            self._sample.add_target(call.target)

    def end_step(self, step: int, row: Any) -> None:
        self._emit(step)
        self._record_rnn_rows()

    def stop(self) -> None:
        self._emit()
        self._record_rnn_rows()

    def _record_rnn_rows(self) -> None:
        for row in self._step_rows:
            self.ctx.recorder.add("rnn_inputs", row, finalize=data_probe.with_all_zero)
        self._step_rows, self._open_row = [], None

    def _emit(self, step: int | None = None) -> None:
        """Record the group held as ``samples`` rows (one per sample of the batch)."""
        taken = self._sample.take()
        self._last_data = None
        self._model_fed = False
        if taken is not None:
            mode, x, y, label_size = taken
            self._fingerprinted[mode] += x.shape[0]
            self.ctx.recorder.add("samples", {"step": self.ctx.step if step is None else step, "mode": mode,
                                              "x1": x[:, 0], "x2": x[:, 1], "y": y,
                                              "label_size": label_size})

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        """Recurrent input as the RNN sees it: scale, constancy, lengths, initial state."""
        x = data_probe.recurrent_input(module, args, kwargs)
        due = self.ctx.due("data")
        # data fed straight to the RNN (its container is never called with it); once the
        # model's input is in the group, what reaches the RNN is the model's own activation
        # (an embedding's output has no grad_fn under no_grad)
        mode = "train" if torch.is_grad_enabled() else "eval"
        if not self._model_fed and (due or self._under_budget(mode)):
            with torch.no_grad():
                if isinstance(x, data_probe.PackedSequence):
                    self._add_packed(x, mode)
                elif isinstance(x, torch.Tensor) and x.dim() >= 2:
                    self._add_data(x, bool(getattr(module, "batch_first", False)), mode)
        if not due:
            return None
        with torch.no_grad():
            row: dict[str, Any] = {"step": self.ctx.step, "module": name, "packed": int(isinstance(x, data_probe.PackedSequence))}
            interior = None
            if isinstance(x, data_probe.PackedSequence):
                t, hist = data_probe.packed_lengths(x)
                row.update(data_probe.input_stats(x.data))
                width = data_probe.padded_width(self._model_input_shape, x)
                if width is not None:
                    row["padded_width"] = width
            elif isinstance(x, torch.Tensor) and x.is_floating_point():
                batch_first = bool(getattr(module, "batch_first", True))
                t, hist, interior = data_probe.padded_lengths(x, batch_first) if x.dim() >= 2 and isinstance(module, nn.RNNBase) else (1, None, None)
                seen = self._last_input_stats
                # the model's input often is the RNN's: its statistics are already on the device
                row.update(seen[1] if seen is not None and seen[0] is x else data_probe.input_stats(x))
            else:
                return None
            row["seq_len"] = t
            if hist is not None:
                row["length_hist"] = hist
            if interior is not None:
                row["interior_zero"] = interior
            hx = data_probe.recurrent_state(args, kwargs)
            states = list(data_probe.tensors_in(hx)) if hx is not None else []
            row["hx_given"] = int(bool(states))
            if states:
                row["hx_zero"] = torch.stack([(h == 0).all() for h in states]).all()
            self._step_rows.append(row)
            self._open_row = row
        return None

    def rnn_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """Mark whether the call took part in training: ``backward`` is set (on the device, in
        the backward pass, no sync) when a gradient reaches any of its outputs. A sampling
        loop run with grad enabled (``generate()`` between steps) carries its state but never
        trains; the rules must not take its calls for the training loop's."""
        row, self._open_row = self._open_row, None
        if row is None or row.get("module") != name:
            return
        outs = [t for t in data_probe.tensors_in(output) if t.requires_grad]
        flag = torch.zeros((), dtype=torch.uint8, device=outs[0].device if outs else "cpu")
        row["backward"] = flag
        for t in outs:
            t.register_hook(functools.partial(_mark_backward, flag))


def _lengths_both_ways(x: torch.Tensor) -> dict[str, Any]:
    """Lengths of a [B, T, F] input read batch-first and of a [T, B, F] one read time-first
    (``_tb``): with no fused RNN nothing says which it is until the gradient profile over
    time (``time_grad``) shows how long the loop was."""
    row: dict[str, Any] = {}
    for suffix, batch_first in (("", True), ("_tb", False)):
        t, hist, interior = data_probe.padded_lengths(x, batch_first)
        row.update({f"seq_len{suffix}": t, f"length_hist{suffix}": hist, f"interior_zero{suffix}": interior})
    return row


def _mark_backward(flag: torch.Tensor, grad: torch.Tensor) -> None:
    flag.fill_(1)
