"""Hand-written recurrent cells, found by dataflow and read as gates.

A cell written from ``nn.Linear`` and ``torch.sigmoid``/``tanh`` (seed 003; Lasagne-style one
Linear per gate; one Linear producing 4H chunks; raw parameters with ``@``) shows PyTorch no
gate at all. On a gates step of a training pass :class:`CellObserver` logs, under a
``TorchFunctionMode``, every sigmoid, tanh, product and ``1 - x``, and every submodule call
with its input and output tensors. :func:`recognise` then reads the log:

- a module called more than once in the step, whose next call receives a tensor its last
  call returned, is a cell; the tensors fed back are its state (h, and c when there are two);
- a sigmoid output multiplied with a state it received is its forget gate (LSTM-style: that
  state is c); with one state, the gate interpolating it (``z * h`` or ``(1 - z) * h``) is a
  GRU-style update gate z;
- the other sigmoids, in the order the cell computes them, are the input and output gates
  (LSTM) or the reset gate (GRU); the tanh output multiplied with the input gate is the
  candidate g (for a GRU the first tanh output is n).

The gates of the step's calls are stacked over t and returned as a :class:`gates.Replay`, so
``gate_stats`` and the rules judge them exactly as a fused module's. A module that feeds its
state back but does not fit the pattern is not read, never guessed. Only sampled steps pay: on the first, :class:`FirstLook` looks for a module
fed back its own output with hooks and weak references (:class:`FeedbackDetector`) while the
op log runs, so the cells it finds are read on the weights the run started from; only when
there is one are later gates steps observed, with the mode logging only inside those
modules' calls (a model with no recurrence has the mode in its forward on that first step
only, and keeps no tensor of it). A model with no
such module has two gates steps observed for a loop written inside a forward
(:func:`inline_cells`), and none after unless one is found.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from . import gates as gates_mod
from . import observing
from .nonfinite import tensors_in

_SIGMOID = {torch.sigmoid, torch.Tensor.sigmoid, torch.special.expit, nn.functional.sigmoid}
_TANH = {torch.tanh, torch.Tensor.tanh, nn.functional.tanh}
_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
_RSUB = {torch.rsub, torch.Tensor.__rsub__}
_SUB = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__}
_GETITEM = {torch.Tensor.__getitem__}
_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}
#: ops that add a bias of their own: F.linear(x, W, b), torch.addmm(b, x, W)
_BIASED = {nn.functional.linear: 2, torch.addmm: 0}
_SPLIT = {torch.chunk, torch.Tensor.chunk, torch.split, torch.Tensor.split, torch.unbind, torch.Tensor.unbind,
          torch.tensor_split, torch.Tensor.tensor_split}

#: calls of one cell kept per step (a loop longer than this is read at its first steps)
MAX_CALLS = gates_mod.MAX_CELL_CALLS


@dataclass(frozen=True)
class Bias:
    """A gate's bias as the pass used it (``value``), and where it lives (``parts``: the
    trained vectors summed into it, each ``(parameter, start, stop, sign)``; None when some
    term is not a parameter). The fix trials' gate-bias treatment writes through ``parts``."""

    value: Tensor
    parts: tuple[tuple[Tensor, int, int, int], ...] | None

    @staticmethod
    def of(value: Tensor, origin: Tensor | None) -> "Bias":
        known = origin is not None and origin.is_leaf and origin.requires_grad and origin.dim() == 1
        return Bias(value, ((origin, 0, origin.shape[0], 1),) if known else None)  # type: ignore[union-attr]

    def cut(self, key: slice) -> "Bias | None":
        start, stop, step = key.indices(self.value.shape[-1])
        if step != 1:
            return Bias(self.value[key], None)
        parts = None if self.parts is None else tuple((p, a + start, a + stop, sign) for p, a, _, sign in self.parts)
        return Bias(self.value[start:stop], parts)

    def __add__(self, other: "Bias") -> "Bias":
        parts = None if self.parts is None or other.parts is None else self.parts + other.parts
        return Bias(self.value + other.value, parts)

    def __neg__(self) -> "Bias":
        return Bias(-self.value, None if self.parts is None else tuple((p, a, b, -s) for p, a, b, s in self.parts))


@dataclass
class _Call:
    module: str
    inputs: list[Tensor]
    outputs: list[Tensor] = field(default_factory=list)
    start: int = 0  # index of the first op logged inside the call
    end: int = 0  # one past the last
    flow_start: int = 0  # the same, in ``CellObserver.flow``
    flow_end: int = 0


class CellObserver(TorchFunctionMode):
    """The op log of one observed forward pass (a training step's)."""

    def __init__(self, inline: bool = False) -> None:
        super().__init__()
        #: also log every op's dataflow (``flow``), so a loop written inside one call can be
        #: cut into its time steps (:func:`inline_cells`)
        self.inline = inline
        #: ((op name, output shapes), outputs, tensor inputs, ``len(ops)`` before the op,
        #: whether it is a gate's nonlinearity, whether a sigmoid)
        self.flow: list[tuple[tuple[Any, ...], tuple[Tensor, ...], tuple[Tensor, ...], int, bool, bool]] = []
        #: (kind, output, inputs): kind in sigmoid | tanh | mul | one_minus | add | biased
        #: (inputs: the bias) | split (output: the whole, inputs: its pieces)
        self.ops: list[tuple[str, Tensor, tuple[Any, ...]]] = []
        self.calls: list[_Call] = []
        self._open: list[_Call] = []
        self.linear_out: dict[int, nn.Module] = {}  # id(output) -> the nn.Linear that made it
        #: id(bias) -> its value when the pass first used it: the cell is read at the step's
        #: end, after the optimizer moved (or a NaN gradient overwrote) the live parameter
        self.bias_at_use: dict[int, Tensor] = {}
        #: id(that copy) -> the tensor it was taken of (where the bias lives, for a treatment)
        self.copied_from: dict[int, Tensor] = {}
        #: > 0 while a probe hook runs (``observing.suspended``): its ops are not the cell's
        self.paused = 0

    def __enter__(self) -> "CellObserver":
        observing.current = self
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        observing.current = None
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self._open or self.paused:  # outside the cells' calls, or our own hooks' ops
            return out
        try:
            if self.inline:
                self._log_flow(func, args, kwargs, out)
            if isinstance(out, Tensor):
                if func in _SIGMOID:
                    self.ops.append(("sigmoid", out, tuple(args[:1])))
                elif func in _TANH:
                    self.ops.append(("tanh", out, tuple(args[:1])))
                elif func in _MUL and len(args) >= 2:
                    self.ops.append(("mul", out, (args[0], args[1])))
                elif func in _RSUB and len(args) >= 2 and _is_one(args[1]):
                    self.ops.append(("one_minus", out, (args[0],)))
                elif func in _SUB and len(args) >= 2 and _is_one(args[0]):
                    self.ops.append(("one_minus", out, (args[1],)))
                elif func in _GETITEM and len(args) >= 2 and _last_dim_slice(args[0], args[1]) is not None:
                    self.ops.append(("index", out, (args[0], args[1])))  # a[:, H:2 * H]
                elif func in _ADD and len(args) >= 2:
                    self.ops.append(("add", out, (args[0], args[1])))
                elif func in _BIASED:
                    bias = args[_BIASED[func]] if len(args) > _BIASED[func] else (kwargs or {}).get("bias", (kwargs or {}).get("input"))
                    if isinstance(bias, Tensor):
                        self.ops.append(("biased", out, (self.as_used(bias),)))
            elif func in _SPLIT and isinstance(out, (tuple, list)) and args and isinstance(args[0], Tensor):
                self.ops.append(("split", args[0], tuple(out)))  # a GRU's z, r = sigmoid(...).chunk(2)
        except Exception:  # the log is best effort; the user's op result is returned as is
            pass
        return out

    def _log_flow(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        outs = tuple(tensors_in(out))
        if not outs:
            return
        ins = tuple(tensors_in(args)) + (tuple(tensors_in(kwargs)) if kwargs else ())
        name = getattr(func, "__name__", str(func))
        gate = func in _SIGMOID or func in _TANH
        self.flow.append(((name, tuple(tuple(t.shape) for t in outs)), outs, ins, len(self.ops), gate, func in _SIGMOID))

    # module boundaries (forward pre-hook / forward hook of every submodule)
    def enter(self, name: str, args: Any) -> None:
        call = _Call(name, list(tensors_in(args)), start=len(self.ops), flow_start=len(self.flow))
        self._open.append(call)

    def leave(self, name: str, module: nn.Module, output: Any) -> None:
        if not self._open or self._open[-1].module != name:
            return
        call = self._open.pop()
        call.outputs = list(tensors_in(output))
        call.end = len(self.ops)
        call.flow_end = len(self.flow)
        self.calls.append(call)
        if isinstance(module, nn.Linear) and isinstance(output, Tensor):
            self.linear_out[id(output)] = module
            if module.bias is not None:
                self.as_used(module.bias)

    def as_used(self, bias: Tensor) -> Tensor:
        """``bias`` as this pass used it (a copy taken at its first use; our own op, not logged)."""
        kept = self.bias_at_use.get(id(bias))
        if kept is None:
            self.paused += 1
            try:
                kept = self.bias_at_use[id(bias)] = bias.detach().clone()
                self.copied_from[id(kept)] = bias
            finally:
                self.paused -= 1
        return kept


class FirstLook:
    """The first gates step: the feedback detector and the op log in one pass, so that the
    cells found are read on the weights the run started from (a run that overflows in its
    first forward, seed 003, has nothing finite left to read later). The op log is kept
    only when a module fed back its own output."""

    def __init__(self) -> None:
        self.detector = FeedbackDetector()
        self.observer = CellObserver(inline=False)

    def enter(self, name: str, args: Any) -> None:
        self.detector.enter(name, args)
        self.observer.enter(name, args)

    def leave(self, name: str, module: nn.Module, output: Any) -> None:
        self.detector.leave(name, module, output)
        self.observer.leave(name, module, output)


class FeedbackDetector:
    """Which modules are fed back their own output, from module hooks alone (weak references,
    no mode): run first, so that only a model with such a module is ever observed, and only
    those modules are."""

    def __init__(self) -> None:
        self.found: set[str] = set()
        self._last: dict[str, list[weakref.ref[Tensor]]] = {}
        #: module -> (calls, the state-shaped inputs of its first call still passed on every
        #: call, with the largest |value| of each, read when first seen)
        self._held: dict[str, tuple[int, list[tuple[weakref.ref[Tensor], Tensor]]]] = {}
        self._args: dict[str, list[Tensor]] = {}

    def enter(self, name: str, args: Any) -> None:
        last = self._last.get(name)
        inputs = list(tensors_in(args))
        if last and any(r() is x for x in inputs for r in last):
            self.found.add(name)
        self._args[name] = inputs

    def leave(self, name: str, module: nn.Module, output: Any) -> None:
        outputs = list(tensors_in(output))
        self._last[name] = [weakref.ref(t) for t in outputs]
        # inputs shaped like an output: a state the call was given
        inputs = self._args.pop(name, [])
        shapes = {tuple(t.shape) for t in outputs}
        states = [t for t in inputs if tuple(t.shape) in shapes and not t.requires_grad]
        calls, held = self._held.get(name, (0, None))
        if held is None:
            with torch.no_grad():
                held = [(weakref.ref(t), t.detach().abs().max()) for t in states if t.numel()]
        else:  # keep only the tensors passed again, the same object, on this call too
            held = [(r, m) for r, m in held if any(r() is t for t in states)]
        self._held[name] = (calls + 1, held)

    def stateless(self, min_calls: int = 3) -> dict[str, Tensor]:
        """Modules called at least ``min_calls`` times in the step that were never fed back
        their own output and got the very same state tensor (one that needs no grad: an
        initial state) on every call: a cell whose new state is never passed back in
        (``h_new = cell(x_t, h)``). Module -> that state's largest |value| (a device scalar)."""
        return {name: held[0][1] for name, (calls, held) in self._held.items()
                if calls >= min_calls and name not in self.found and held}


def _last_dim_slice(whole: Any, key: Any) -> slice | None:
    """The slice of the last dimension ``whole[key]`` takes when it takes whole every other
    dimension (``a[:, H:2 * H]``, ``a[..., :H]``); None for any other indexing."""
    if not isinstance(whole, Tensor) or whole.dim() == 0:
        return None
    key = key if isinstance(key, tuple) else (key,)
    if not key or not isinstance(key[-1], slice):
        return None
    lead = key[:-1]
    full = slice(None)
    if lead == (Ellipsis,) or (len(key) == whole.dim() and all(k == full for k in lead)):
        return key[-1]
    return None


def _is_one(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == 1


@dataclass
class Recognised:
    """A module fed back its own output: read as gates (``replay``), or why not (``reason``)."""

    module: str
    replay: gates_mod.Replay | None = None
    reason: str = ""
    #: a loop that carries nothing but reads the same state-shaped tensor on every step
    #: (``h0`` where ``h`` was meant): that tensor's largest |value|
    held_state: Tensor | None = None
    #: each gate's bias and where it lives (gates whose bias was not found are absent)
    gate_biases: dict[str, Bias] = field(default_factory=dict)


def recognise(obs: CellObserver) -> list[Recognised]:
    """Every cell in the log: its gates, or — a cell that does not fit the pattern — why it
    was not read (never guessed)."""
    by_module: dict[str, list[_Call]] = {}
    for call in obs.calls:
        by_module.setdefault(call.module, []).append(call)
    found = []
    for name, calls in by_module.items():
        calls = sorted(calls, key=lambda c: c.start)[:MAX_CALLS]
        if len(calls) < 2 or not _feeds_back(calls):
            continue
        rep = _read_cell(obs, calls)
        found.append(Recognised(name, rep[0], gate_biases=rep[1]) if isinstance(rep, tuple) else Recognised(name, reason=rep))
    return found


#: time steps (windows) an inline loop needs before it is read: a middle one to place the
#: step boundary at, and one on each side
MIN_INLINE_STEPS = 3


def inline_cells(obs: CellObserver) -> list[Recognised]:
    """Loops written inside one call: a model's forward that steps through time over raw
    parameters, with no cell module to be fed back its output. The call's ops (``flow``)
    repeat with a period, one time step each, and every step uses the very same weights (a
    stack of identical layers has its own in each); the step boundary is placed where the
    fewest tensors cross into the next step, none of them a sigmoid gate (:func:`_time_steps`), and the
    tensors that do cross are the state. The steps are then read as a cell's calls. The
    innermost call holding such a loop is read, once per module (its first call). A loop of
    tanh alone (an Elman RNN) is found the same way; it has no gates to read."""
    if not obs.inline or not obs.flow:
        return []
    first: dict[str, _Call] = {}
    for call in obs.calls:
        if call.module not in first or call.start < first[call.module].start:
            first[call.module] = call
    found: list[Recognised] = []
    taken: list[tuple[int, int]] = []
    for call in sorted(first.values(), key=lambda c: c.flow_end - c.flow_start):
        if any(call.flow_start <= a and b <= call.flow_end for a, b in taken):
            continue  # holds a loop already read
        steps = _time_steps(obs, call)
        if steps is None:
            continue
        taken.append((call.flow_start, call.flow_end))
        if isinstance(steps, _Held):
            found.append(Recognised(call.module, reason=f"a loop inside its forward: {steps.reason}",
                                    held_state=steps.abs_max))
            continue
        rep = _read_cell(obs, steps)
        found.append(Recognised(call.module, rep[0], gate_biases=rep[1]) if isinstance(rep, tuple)
                     else Recognised(call.module, reason=f"a loop inside its forward: {rep}"))
    return found


@dataclass
class _Held:
    """A loop whose steps hand nothing on; ``abs_max``: the state-shaped tensor every step
    reads instead (None: none)."""

    reason: str
    abs_max: Tensor | None


def _time_steps(obs: CellObserver, call: _Call) -> list[_Call] | _Held | None:
    """The time steps of a loop inside ``call``, as calls whose inputs are the state the step
    before handed on; what was seen when the ops repeat but carry nothing; None without a
    loop that has a sigmoid or tanh in it."""
    flow = obs.flow[call.flow_start:call.flow_end]
    sig = [f[0] for f in flow]
    anchors = [j for j, f in enumerate(flow) if f[4]]  # sigmoids and tanh
    period = _period(sig, anchors)
    if period is None:
        return None
    P = period
    # the stretch over which the ops repeat with that period
    s, e = anchors[0], anchors[0] + P
    while e < len(sig) and sig[e] == sig[e - P]:
        e += 1
    while s > 0 and s - 1 >= anchors[0] - P and sig[s - 1] == sig[s - 1 + P]:
        s -= 1
    produced = {id(t): j for j in range(s, e) for t in flow[j][1]}
    best: tuple[int, list[int], list[tuple[int, int]]] | None = None
    for offset in range(P):
        bounds = list(range(s + offset, e - P + 1, P))
        if len(bounds) < MIN_INLINE_STEPS:
            continue
        b = bounds[len(bounds) // 2]
        crossing = _crossing(flow, produced, b, P)
        if any(flow[j][5] for j, _ in crossing):
            continue  # a sigmoid gate used in the step after its own: not a step boundary
        if best is None or len(crossing) < len(best[2]):
            best = (offset, bounds, crossing)
    if best is None:
        return None
    _, bounds, crossing = best
    if not _same_weights_each_step(flow, bounds, P):
        return None  # repeated layers with weights of their own (a deep MLP): not a recurrence
    if not crossing:
        return _Held("its time steps hand nothing on to the next (no state is carried)",
                     _held_state(flow, bounds, P))
    # the state, latest made first (an LSTM's h after the c it is made from)
    roles = sorted(((j - (bounds[len(bounds) // 2] - P), k) for j, k in crossing), reverse=True)

    def state_at(start: int) -> list[Tensor]:
        return [flow[start + r][1][k] for r, k in roles]

    steps = []
    base = call.flow_start
    for prev, cur in zip(bounds, bounds[1:]):
        end = cur + P
        steps.append(_Call(call.module, state_at(prev), state_at(cur), start=flow[cur][3],
                           end=flow[end][3] if end < len(flow) else call.end,
                           flow_start=base + cur, flow_end=base + end))
    return steps[:MAX_CALLS]


def _same_weights_each_step(flow: list[Any], bounds: list[int], P: int) -> bool:
    """Every step uses the very same trained tensors (what makes a loop a recurrence, where a
    stack of identical layers has weights of its own in each)."""
    def weights(start: int) -> set[int]:
        return {id(t) for j in range(start, min(start + P, len(flow))) for t in flow[j][2] if t.is_leaf and t.requires_grad}

    middle = len(bounds) // 2
    w = weights(bounds[middle])
    return bool(w) and all(weights(b) == w for b in bounds[max(0, middle - 1):middle + 2])


def _held_state(flow: list[Any], bounds: list[int], P: int) -> Tensor | None:
    """The largest |value| of a tensor made before the loop, needing no gradient (an initial
    state, not a weight or the input's slices), that every step reads at the same place and
    that is shaped like the step's gates: the state each step starts from afresh."""
    gate_shapes = {tuple(t.shape) for j in range(bounds[0], bounds[0] + P) if flow[j][4] for t in flow[j][1]}
    first = bounds[0]
    for r in range(P):
        for t in flow[first + r][2]:
            if t.requires_grad or tuple(t.shape) not in gate_shapes:
                continue
            if all(j + r < len(flow) and any(u is t for u in flow[j + r][2]) for j in bounds):
                return t.detach().abs().max()
    return None


def _period(sig: list[Any], anchors: list[int]) -> int | None:
    """The number of ops in one time step: the anchors (the sigmoid and tanh ops) come in
    groups of ``k`` a fixed distance apart, and the ops between repeat exactly, at least
    ``MIN_INLINE_STEPS`` times."""
    n = len(anchors)
    for k in range(1, n // MIN_INLINE_STEPS + 1):
        P = anchors[k] - anchors[0]
        reps = n // k
        if P <= 0 or any(anchors[m * k] != anchors[0] + m * P for m in range(reps)):
            continue
        start, last = anchors[0], anchors[reps * k - 1]  # through the last step's last anchor
        if all(sig[j] == sig[j + P] for j in range(start, last - P + 1)):
            return P
    return None


def _crossing(flow: list[Any], produced: dict[int, int], b: int, P: int) -> list[tuple[int, int]]:
    """(op, output index) of the tensors made in the step before boundary ``b`` and used in
    the step after it."""
    out: set[tuple[int, int]] = set()
    for j in range(b, min(b + P, len(flow))):
        for t in flow[j][2]:
            p = produced.get(id(t))
            if p is not None and b - P <= p < b:
                out.add((p, next(k for k, o in enumerate(flow[p][1]) if o is t)))
    return sorted(out)


def _feeds_back(calls: list[_Call]) -> bool:
    return any(any(x is y for x in nxt.inputs for y in prev.outputs) for prev, nxt in zip(calls, calls[1:]))


def _state_positions(calls: list[_Call]) -> list[int]:
    """Input positions that receive the previous call's outputs (from the second call on)."""
    prev, nxt = calls[0], calls[1]
    return [i for i, x in enumerate(nxt.inputs) if any(x is y for y in prev.outputs)]


def _read_cell(obs: CellObserver, calls: list[_Call]) -> tuple[gates_mod.Replay, dict[str, Bias]] | str:
    """The cell's gates over its calls and each gate's bias, or why they could not be read."""
    positions = _state_positions(calls)
    if not positions:
        return "no input of its second call is an output of its first"
    per_call: list[dict[str, Tensor]] = []
    mode = None
    c_seq: list[Tensor] = []
    h_seq: list[Tensor] = []
    biases: dict[str, Bias] = {}
    for call in calls:
        if max(positions) >= len(call.inputs):
            return "its calls take different numbers of inputs"
        states = [call.inputs[i] for i in positions]
        read = _read_call(obs, call, states)
        if isinstance(read, str):
            return read
        call_mode, gates, c_in, call_biases = read
        if mode is None:
            mode, biases = call_mode, call_biases
        elif call_mode != mode or set(gates) != set(per_call[0]):
            return "its calls compute different gates"
        per_call.append(gates)
        h_out = next((t for t in call.outputs if t.shape == gates[next(iter(gates))].shape), None)
        if h_out is None:
            return "no output has the gates' shape"
        h_seq.append(h_out)
        if c_in is not None:
            c_seq.append(c_in)
    shapes = {g.shape for gates in per_call for g in gates.values()} | {h.shape for h in h_seq}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        return "its gates and state are not one [batch, hidden] shape throughout"
    with torch.no_grad():
        stacked = {g: torch.stack([gates[g].detach() for gates in per_call], 1) for g in per_call[0]}
        h = torch.stack([t.detach() for t in h_seq], 1)
        c = None
        if mode == "LSTM" and len(c_seq) == len(calls):
            # c_{t-1} of calls 2..T are c_1..c_{T-1}; the last call's new c is among its outputs
            last = next((t for t in calls[-1].outputs if t is not h_seq[-1] and t.shape == h_seq[-1].shape), None)
            seq = c_seq[1:] + ([last] if last is not None else [])
            c = torch.stack([t.detach() for t in seq], 1) if seq else None
    hidden = h.shape[-1]
    # gate_stats reads the keeping gate's bias from the [H:2H] slice of b_ih + b_hh, where
    # torch keeps f (LSTM: i, f, g, o) and z (GRU: r, z, n); NaN: not known
    b_ih = torch.full(((4 if mode == "LSTM" else 3) * hidden,), float("nan"), dtype=h.dtype, device=h.device)
    forget_bias = biases.get("f" if mode == "LSTM" else "z")
    if forget_bias is not None and tuple(forget_bias.value.shape) == (hidden,):
        b_ih[hidden:2 * hidden] = forget_bias.value.detach().to(h.dtype)
    b_hh = torch.zeros_like(b_ih)
    layer = gates_mod.LayerReplay(0, 0, stacked, h, c, b_ih, b_hh)
    replay = gates_mod.Replay(mode or "LSTM", [layer], h, h[:, -1], c[:, -1] if c is not None else None,
                              batch_first=True, hidden_size=hidden)
    return replay, biases


def _read_call(obs: CellObserver, call: _Call, states: list[Tensor]
               ) -> tuple[str, dict[str, Tensor], Tensor | None, dict[str, Bias]] | str:
    """(mode, {gate: [B, H]}, the c it received, {gate: its bias} where found) of one call,
    or why it does not read as an LSTM or GRU cell."""
    ops = obs.ops[call.start:call.end]
    parts = {id(whole): list(pieces) for kind, whole, pieces in ops if kind == "split"}
    # a sigmoid output split into pieces is that many gates, in order
    sigmoids = [p for kind, out, _ in ops if kind == "sigmoid" for p in parts.get(id(out), [out])]
    tanhs = [out for kind, out, _ in ops if kind == "tanh"]
    if not sigmoids:
        return "no sigmoid gate"
    origin = {id(out): src[0] for kind, out, src in ops if kind == "one_minus"}  # 1 - s -> s

    def gate_of(t: Any) -> Tensor | None:
        t = origin.get(id(t), t)
        return next((s for s in sigmoids if s is t), None)

    muls = [src for kind, _, src in ops if kind == "mul"]
    # (gate, state it multiplies, whether through 1 - gate)
    state_gates: list[tuple[Tensor, Tensor, bool]] = []
    for a, b in muls:
        for g, s in ((a, b), (b, a)):
            gate = gate_of(g)
            if gate is not None and any(s is st for st in states):
                state_gates.append((gate, s, gate is not g))
    if len(states) == 1 and len(state_gates) > 1:
        # GRU-style with r * h: the update gate is the one that also appears as 1 - z
        complemented = [g for g, _, _ in state_gates if any(src is g for src in origin.values())]
        state_gates = [sg for sg in state_gates if any(sg[0] is c for c in complemented)]
        # one gate both ways (a minimal gated unit: h' = (1 - f) * h + f * tanh(W x + U (f * h))):
        # the interpolation, through 1 - f, is what keeps the state
        if len(state_gates) > 1 and all(sg[0] is state_gates[0][0] for sg in state_gates):
            state_gates = [next((sg for sg in state_gates if sg[2]), state_gates[0])]
    if len(state_gates) != 1:
        return ("no sigmoid gate multiplies the state it carries" if not state_gates
                else f"{len(state_gates)} sigmoid gates multiply the state it carries")
    keeper, state, flipped = state_gates[0]
    others = [s for s in sigmoids if s is not keeper]
    if len(states) >= 2:  # LSTM-style: the state the forget gate keeps is c
        if len(others) != 2:
            return f"{len(others)} sigmoid gate(s) besides the one that keeps its state (an LSTM has 2)"
        i_gate, o_gate = others
        g = next((b if a is i_gate else a for a, b in muls if (a is i_gate) ^ (b is i_gate)), None)
        found = {"i": i_gate, "f": keeper, "o": o_gate}
        if g is not None and any(g is t for t in tanhs):
            found["g"] = g
        return "LSTM", found, state, _biases(obs, ops, found)
    if len(others) > 1:
        return f"{len(others)} sigmoid gate(s) besides the one that keeps its state (a GRU has 1)"
    if not tanhs:
        return "no tanh candidate"
    # recorded as torch's z, the share of the state kept (h' = (1 - z) * n + z * h); a cell
    # written the other way round (h' = z * n + (1 - z) * h) keeps 1 - z, biased by -b
    z = 1 - keeper if flipped else keeper
    found = {"r": others[0], "z": z, "n": tanhs[0]} if others else {"z": z, "n": tanhs[0]}  # no r: a minimal gated unit
    biases = _biases(obs, ops, {**found, "z": keeper})
    if flipped and "z" in biases:
        biases["z"] = -biases["z"]
    return "GRU", found, None, biases


def _biases(obs: CellObserver, ops: list[tuple[str, Tensor, tuple[Any, ...]]], gates: dict[str, Tensor]) -> dict[str, Bias]:
    """Each gate's bias where one is found; a gate whose dataflow the search does not follow
    is left out (best effort: the gates are read either way)."""
    found: dict[str, Bias] = {}
    for name, g in gates.items():
        try:
            bias = _bias_of(obs, ops, g)
        except Exception:  # an op shape the search does not expect
            bias = None
        if bias is not None:
            found[name] = bias
    return found


def _bias_of(obs: CellObserver, ops: list[tuple[str, Tensor, tuple[Any, ...]]], gate: Tensor) -> Bias | None:
    """The bias the sigmoid's (or the candidate's tanh's) input carries (``ops``: the call's own): an nn.Linear's, a
    slice of it (``linear(xh).chunk(4, -1)``), a parameter added in (``x @ W + h @ U + b``),
    F.linear's or addmm's, summed over the terms of an addition (``W x + b_i + U h + b_h``;
    a peephole term adds none)."""
    src = next((s[0] for kind, out, s in ops if kind in ("sigmoid", "tanh") and out is gate), None)
    if isinstance(src, Tensor):
        return _bias_feeding(obs, ops, src, depth=6)
    # a piece of a sigmoid's output: z, r = sigmoid(linear(xh)).chunk(2)
    for kind, whole, pieces in ops:
        if kind != "split" or not any(p is gate for p in pieces):
            continue
        pre = next((s[0] for k, out, s in ops if k == "sigmoid" and out is whole), None)
        b = _bias_feeding(obs, ops, pre, depth=6) if isinstance(pre, Tensor) else None
        return _piece_of(b, whole, pieces, gate)
    return None


def _piece_of(bias: Bias | None, whole: Tensor, pieces: tuple[Any, ...], piece: Tensor) -> Bias | None:
    """The slice of ``whole``'s bias that ``piece`` (one of ``whole``'s split ``pieces``)
    carries; None when the split is not along the last dimension or the bias does not fit."""
    if bias is None or bias.value.shape[-1] != whole.shape[-1] or any(p.shape[:-1] != whole.shape[:-1] for p in pieces):
        return None
    offset = 0
    for p in pieces:
        if p is piece:
            return bias.cut(slice(offset, offset + p.shape[-1]))
        offset += p.shape[-1]
    return None


def _bias_feeding(obs: CellObserver, ops: list[tuple[str, Tensor, tuple[Any, ...]]], t: Tensor, depth: int) -> Bias | None:
    """The bias vector added into ``t``, followed back through at most ``depth`` ops."""
    if depth == 0:
        return None
    module = obs.linear_out.get(id(t))
    if module is not None:
        return Bias.of(obs.bias_at_use.get(id(module.bias), module.bias), module.bias) if module.bias is not None else None
    for kind, out, src in ops:
        if kind == "biased" and out is t:
            return Bias.of(src[0], obs.copied_from.get(id(src[0]))) if src[0].dim() == 1 else None
        if kind == "index" and out is t:
            whole, key = src
            b = _bias_feeding(obs, ops, whole, depth - 1)
            cut = _last_dim_slice(whole, key)
            return b.cut(cut) if b is not None and cut is not None and b.value.shape[-1] == whole.shape[-1] else None
        if kind == "add" and out is t:
            found = [b for b in (_term_bias(obs, ops, a, t, depth) for a in src) if b is not None]
            return sum(found[1:], found[0]) if found else None
        if kind == "split" and any(p is t for p in src):
            return _piece_of(_bias_feeding(obs, ops, out, depth - 1), out, src, t)
    return None


def _term_bias(obs: CellObserver, ops: list[tuple[str, Tensor, tuple[Any, ...]]], term: Any, total: Tensor,
               depth: int) -> Bias | None:
    """The bias one term of an addition contributes: the term itself when it is a trained
    vector as wide as the sum (``+ b``), else what feeds it."""
    if not isinstance(term, Tensor):
        return None
    if term.is_leaf and term.requires_grad:
        return Bias.of(term, term) if term.dim() == 1 and term.shape[-1] == total.shape[-1] else None
    return _bias_feeding(obs, ops, term, depth - 1)
