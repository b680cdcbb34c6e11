"""Gate replay on the gates schedule: gates and cell states recomputed from a recurrent
module's own weights and the call's input (``gates``, ``cell``), before the optimizer moves
the weights. A fused RNN's first training call of the step is replayed whole; an
``nn.*Cell`` called once per time step has every call of the step replayed (one time step
each) and reduced when the step ends, as one sequence of that many steps. A model without
a torch recurrent module has its gates step's training pass observed for hand-written cells
(``hand_cells``): a module fed back its own output, whose sigmoids multiply the state it
carries, is read as gates and recorded the same way."""

from __future__ import annotations

import json

from typing import Any, Union

import torch
from torch import nn

from . import data as data_probe
from . import gates, hand_cells
from .base import Context, Probe

#: what watches a gates step's forward for hand-written cells: first the detector, then the observer
Watcher = Union[hand_cells.FeedbackDetector, hand_cells.CellObserver, hand_cells.FirstLook]


class GatesProbe(Probe):
    """Gate saturation and cell-state growth of every recurrent module, by replay (torch's
    modules) or by reading the ops of a hand-written cell."""

    name = "gates"
    schedule = "gates"
    signals = ("gates", "cell", "hand_cells")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._step = -1
        #: replays of cell calls on the current gates step, per cell module
        self._cell_calls: dict[str, list[tuple[gates.Replay, torch.Tensor]]] = {}
        #: the op log of a gates step's training pass, read for hand-written cells at its end
        self._observer: Watcher | None = None
        self._observer_hooks: list[Any] = []
        self._observed_step = -1
        self._last_observed: hand_cells.CellObserver | None = None
        #: hand-written cells whose reading (gates, or why not) is recorded
        self._cells_told: set[str] = set()
        #: modules seen fed back their own output (the only ones observed)
        self._feedback: set[str] = set()
        #: gates steps left on which to look for a loop inside a forward (no module fed back
        #: its output); kept up once such a loop is read
        self._inline_tries = 0
        #: the first gates step was looked at (feedback detector and op log together)
        self._looked = False
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        """A training pass on a gates step: observe it for hand-written cells (once per step)."""
        if self._observer is not None or self._observed_step == self.ctx.step or not torch.is_grad_enabled():
            return
        if self.ctx.model.inside:  # compiled modules: a TorchFunctionMode would change their graphs
            return
        if self.ctx.model.recurrent:  # torch's recurrent modules are replayed; a model with
            return  # one is not read for hand-written cells (no mode in its forward at all)
        self._observed_step = self.ctx.step
        # first look for a module fed back its own output (hooks, weak references); observe
        # the ops of such modules (and what they call) on the gates steps after that
        # a model with no such module: look for a loop inside a forward (every op's dataflow)
        inline = not self._feedback and self._inline_tries > 0
        watcher: Watcher = (hand_cells.CellObserver(inline=inline) if self._feedback or inline
                            else hand_cells.FirstLook() if not self._looked else hand_cells.FeedbackDetector())
        self._looked = True
        handles = []
        for root in self.ctx.model.roots.values():
            for m in root.modules():
                name = self.ctx.model.names.get(id(m), "model")
                if self._feedback and not any(name == f or name.startswith(f + ".") or f == "model" for f in self._feedback):
                    continue
                handles.append(m.register_forward_pre_hook(_enter_hook(watcher, name)))
                handles.append(m.register_forward_hook(_leave_hook(watcher, name)))
        self._observer_hooks = handles
        if isinstance(watcher, hand_cells.FirstLook):
            watcher.observer.__enter__()
        if isinstance(watcher, hand_cells.CellObserver):
            watcher.__enter__()
            if inline:  # this call's own pre-hook has run: open it by hand
                watcher.enter(self.ctx.model.names.get(id(module), "model"), args)
        self._observer = watcher

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        if self._observer is not None:  # the step's forward passes are over: read at its end
            self._last_observed = self._stop_observing()

    def _stop_observing(self) -> hand_cells.CellObserver | None:
        obs, self._observer = self._observer, None
        for h in self._observer_hooks:
            h.remove()
        self._observer_hooks = []
        if isinstance(obs, hand_cells.FirstLook):
            obs.observer.__exit__(None, None, None)
            self._take_detector(obs.detector)
            # read the first step's cells too: a run that overflows in its first forward (seed
            # 003) has no finite weights left to read on any later step
            return obs.observer if self._feedback else None
        if isinstance(obs, hand_cells.FeedbackDetector):
            self._take_detector(obs)
            return None
        if obs is not None:
            obs.__exit__(None, None, None)
        return obs

    def _take_detector(self, obs: hand_cells.FeedbackDetector) -> None:
        """What the feedback detector found: the modules to observe from now on, and the loops
        that carry nothing (``no-recurrence`` reads them)."""
        self._feedback = obs.found
        stateless = obs.stateless()
        if not obs.found and not stateless:
            self._inline_tries = 2
        for name, abs_max in stateless.items():
            # the same initial state on every call, never the module's own output: its
            # size says whether anything could be carried (no-recurrence reads it)
            self.ctx.recorder.add("hand_cells", {"step": self.ctx.step, "module": name, "read": -1,
                                                 "state_fed_back": 0, "state_abs_max": abs_max})

    def rnn_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        if isinstance(module, nn.RNNBase):
            self._replay_fused(name, module, args, kwargs, output)
        elif isinstance(module, nn.RNNCellBase):
            self._replay_cell(name, module, args, kwargs, output)

    def _replay_fused(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self._step == self.ctx.step:
            return  # first call of the step only
        self._step = self.ctx.step
        x = data_probe.recurrent_input(module, args, kwargs)
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        with torch.no_grad():
            rep = gates.replay(module, x, hx, max_batch=self.ctx.gate_batch)
            h_n = output[1][0] if isinstance(output[1], tuple) else output[1]
            h_n = h_n.detach()
            if h_n.dim() == 3 and rep.h_n.dim() == 3 and rep.h_n.shape[1] < h_n.shape[1]:
                h_n = h_n[:, :rep.h_n.shape[1]]  # the subsample gate_batch replayed
            err = (rep.h_n - h_n).abs().max() if rep.h_n.shape == h_n.shape else torch.full((), float("nan"), dtype=torch.float32)
            self._record(name, self.ctx.step, rep, err)

    def _replay_cell(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, torch.Tensor):
            return
        calls = self._cell_calls.setdefault(name, [])
        if len(calls) >= gates.MAX_CELL_CALLS:
            return
        with torch.no_grad():
            rep = gates.replay_cell(module, x, hx)
            if calls and calls[0][0].layers[0].h.shape != rep.layers[0].h.shape:
                return  # the batch changed inside the step: keep the first shape's calls
            h_mod = output[0] if isinstance(output, tuple) else output
            err = (rep.h_n - h_mod.detach()).abs().max()
        calls.append((rep, err))

    def end_step(self, step: int, row: dict[str, Any]) -> None:
        obs = self._stop_observing() if self._observer is not None else self._last_observed
        self._last_observed = None
        if obs is not None:
            self._read_hand_cells(step, obs)
        cell_calls, self._cell_calls = self._cell_calls, {}
        for name, calls in cell_calls.items():
            with torch.no_grad():
                rep = gates.join_cell_calls([r for r, _ in calls])
                err = torch.stack([e for _, e in calls]).max()
            self._record(name, step, rep, err)

    def stop(self) -> None:
        self._stop_observing()

    def _read_hand_cells(self, step: int, obs: hand_cells.CellObserver) -> None:
        with torch.no_grad():
            cells = hand_cells.recognise(obs)
            if obs.inline:
                inline = hand_cells.inline_cells(obs)
                self._inline_tries = 10 ** 9 if inline else self._inline_tries - 1
                cells += inline
            for cell in cells:
                if cell.held_state is not None:  # nothing carried, the same state read each step
                    self.ctx.recorder.add("hand_cells", {"step": step, "module": cell.module, "read": -1,
                                                         "state_fed_back": 0, "state_abs_max": cell.held_state,
                                                         "reason": cell.reason})
                    continue
                if cell.module not in self._cells_told:  # read or not: said once per module
                    self._cells_told.add(cell.module)
                    self.ctx.recorder.add("hand_cells", {"step": step, "module": cell.module,
                                                         "read": int(cell.replay is not None), "reason": cell.reason,
                                                         "gate_biases": self._where(cell.gate_biases)})
                if cell.replay is not None:
                    self._record(cell.module, step, cell.replay, torch.full((), float("nan")))

    def _where(self, biases: dict[str, hand_cells.Bias]) -> str:
        """Where each gate's bias lives, by parameter name (JSON: ``{gate: [[name, start, stop,
        sign], ...]}``, the terms summed into it): what a fix trial's gate-bias treatment sets."""
        names = {id(p): n for n, p in self.ctx.model.params}
        where = {gate: [[names[id(p)], a, b, sign] for p, a, b, sign in bias.parts]
                 for gate, bias in biases.items()
                 if bias.parts is not None and all(id(p) in names for p, *_ in bias.parts)}
        return json.dumps(where, separators=(",", ":")) if where else ""

    def _record(self, name: str, step: int, rep: gates.Replay, err: torch.Tensor) -> None:
        for row in gates.gate_stats(rep):
            base = {"step": step, "module": name}
            if row.get("gate") is None:
                self.ctx.recorder.add("cell", {**base, **{k: v for k, v in row.items() if k != "gate"}})
            else:
                self.ctx.recorder.add("gates", {**base, **row, "replay_err": err, "exact": int(rep.exact)})


def _enter_hook(obs: Watcher, name: str):  # noqa: ANN202 - a forward pre-hook
    def hook(module: nn.Module, args: Any) -> None:
        obs.enter(name, args)
    return hook


def _leave_hook(obs: Watcher, name: str):  # noqa: ANN202 - a forward hook
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        obs.leave(name, module, output)
    return hook
