"""Treatments: one change to a training run, applied from outside the script, that a fix
trial (``rnndoctor diagnose --try-fixes``, ``trials.py``) re-runs the script with.

A treatment is a probe (``probes/base.py``) that *changes* the run instead of recording it:
it uses the same hooks (adoption, the recurrent module's call, the backward pass, the
optimizer's step), so it reaches the model, the optimizer and the state however the script
wrote them, and the script's file is never touched. It records nothing; it counts how
often it acted (``applied``), so a trial where it never could act is reported "not
applicable", never as a fix that failed or worked.

A treatment may take arguments the diagnosed run's record supplies (``arguments_from(run)``:
where a hand-written cell keeps its gate biases); the trial hands them to the child process
as JSON (``diagnose --treat NAME --treat-args JSON``).

Each treatment says which findings it treats (``treats(finding)``: the id, and where the
evidence says which way, the direction: updates too large are treated with a smaller
learning rate, too small with a larger one). Only trials run them; a plain ``diagnose`` or
``watch()`` never changes anything.
"""

from __future__ import annotations

import json
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .finding import Finding
from .probes.base import Context, Probe

if TYPE_CHECKING:
    from .run import Run

__all__ = ["TREATMENTS", "Treatment", "get_treatment", "treatments_for"]

class Treatment(Probe):
    """A probe that changes the run; ``applied`` counts the times it acted."""

    #: what a reader sees: "learning rate ÷ 10"
    label: ClassVar[str] = ""
    #: the finding ids it may treat (``treats`` narrows by evidence)
    ids: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **arguments: Any) -> None:
        self.applied = 0
        self.ctx: Context | None = None
        self.arguments = arguments

    @classmethod
    def treats(cls, finding: Finding) -> bool:
        return finding.id in cls.ids

    @classmethod
    def arguments_from(cls, run: "Run") -> dict[str, Any]:
        """What this treatment needs to know of the diagnosed run (JSON-able; {}: nothing)."""
        return {}

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        return []


class _ScaleLearningRate(Treatment):
    factor: ClassVar[float] = 1.0
    sides: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self._done: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()

    @classmethod
    def treats(cls, finding: Finding) -> bool:
        if finding.id == "learning-rate-scale":
            return finding.evidence.get("side") in cls.sides
        return finding.id in cls.ids

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Once per optimizer, at its first step: every group's learning rate scaled, and
        every rate a scheduler of it computes the learning rate from (otherwise its next
        ``step()`` puts the script's own rates back)."""
        if optimizer in self._done:
            return
        self._done.add(optimizer)
        for group in optimizer.param_groups:
            for key in _GROUP_RATES:
                if isinstance(group.get(key), (int, float)):
                    group[key] = group[key] * self.factor
                elif isinstance(group.get(key), torch.Tensor):
                    group[key].mul_(self.factor)
        for scheduler in _schedulers_of(optimizer):
            for key in _SCHEDULER_RATES:
                value = getattr(scheduler, key, None)
                if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
                    setattr(scheduler, key, type(value)(v * self.factor for v in value))
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    setattr(scheduler, key, value * self.factor)
        self.applied += 1


#: the rates a param group holds: its own, and the ones schedulers keep there (``initial_lr``:
#: every LRScheduler; OneCycleLR's ``max_lr``/``min_lr``)
_GROUP_RATES = ("lr", "initial_lr", "max_lr", "min_lr")
#: the rates a scheduler keeps itself: the base rates (every LRScheduler), CyclicLR's peaks,
#: the cosine schedules' floor, ReduceLROnPlateau's floors
_SCHEDULER_RATES = ("base_lrs", "max_lrs", "eta_min", "min_lrs", "_last_lr")


def _schedulers_of(optimizer: torch.optim.Optimizer) -> list[Any]:
    """The learning-rate schedulers driving ``optimizer`` (nothing points from an optimizer to
    its schedulers: found among the live objects, once per treated optimizer, in a trial only)."""
    import gc

    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    kinds = (LRScheduler, ReduceLROnPlateau)
    # type(o), not isinstance: isinstance asks some live objects for __class__ (a deprecated
    # module attribute warns)
    return [o for o in gc.get_objects() if issubclass(type(o), kinds) and getattr(o, "optimizer", None) is optimizer]


class LearningRateDown(_ScaleLearningRate):
    """Divide the learning rate by 10 at the first optimizer step."""

    name = "lr-div-10"
    label = "learning rate ÷ 10"
    factor = 0.1
    sides = ("large",)
    ids = ("divergence", "non-finite", "exploding-gradients", "gradients-not-zeroed")


class LearningRateUp(_ScaleLearningRate):
    """Multiply the learning rate by 10 at the first optimizer step."""

    name = "lr-x-10"
    label = "learning rate × 10"
    factor = 10.0
    sides = ("small",)
    ids = ()


class ClipGradients(Treatment):
    """Clip the global gradient norm to 1 before each optimizer step."""

    name = "clip-grad-norm"
    label = "gradient norm clipped to 1"
    ids = ("exploding-gradients", "divergence", "non-finite")
    max_norm: ClassVar[float] = 1.0

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)
            self.applied += 1


class ZeroGradients(Treatment):
    """Clear the watched parameters' gradients before each step's first backward pass."""

    name = "zero-grad"
    label = "gradients zeroed before each step's backward"
    ids = ("gradients-not-zeroed",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self._step = -1

    def backward(self, root: torch.Tensor) -> None:
        assert self.ctx is not None
        if self.ctx.step == self._step:
            return  # a second backward of the same step accumulates, as the script means it to
        self._step = self.ctx.step
        for _, p in self.ctx.model.params:
            p.grad = None
        self.applied += 1


def _gate_chunks(module: nn.Module) -> int:
    mode = getattr(module, "mode", None) or type(module).__name__.replace("Cell", "").upper()
    return {"LSTM": 4, "GRU": 3}.get(str(mode), 1)


class _AtAdoption(Treatment):
    """A change made once to each recurrent module, when the watch adopts it."""

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self._done: set[int] = set()

    def attach(self, ctx: Context) -> list[Any]:
        for _, module in ctx.model.recurrent:
            if id(module) not in self._done:
                self._done.add(id(module))
                with torch.no_grad():
                    self.applied += int(self.change(module))
        return []

    def change(self, module: nn.Module) -> bool:
        """Change ``module`` (under no_grad); False when there was nothing to change."""
        raise NotImplementedError


class ForgetGateBias(_AtAdoption):
    """At adoption: every LSTM's gate biases reset to 0 and its forget-gate bias set to 1
    (GRU biases reset to 0). A hand-written cell gets the same, through the parameter slices
    the diagnosed run found its gate biases in (``arguments_from``: the ``hand_cells``
    record), set before the first training forward pass (a script that initialises its cell
    after building the optimizer has done so by then)."""

    name = "forget-bias-1"
    label = "gate biases reset, forget-gate bias 1"
    ids = ("forget-gate-saturation", "gate-saturation", "cell-state-growth", "vanishing-gradient-through-time")

    @classmethod
    def arguments_from(cls, run: "Run") -> dict[str, Any]:
        if not run.has("hand_cells") or "gate_biases" not in run["hand_cells"]:
            return {}
        cells = {}
        for row in run["hand_cells"].itertuples():
            where = row.gate_biases if isinstance(row.gate_biases, str) else ""
            if where and row.module not in cells:
                cells[row.module] = json.loads(where)
        return {"hand_cells": cells} if cells else {}

    def model_call(self, module: nn.Module, args: Any) -> None:
        cells = self.arguments.get("hand_cells")
        if not cells or not torch.is_grad_enabled() or self.ctx is None:
            return
        self.arguments = {k: v for k, v in self.arguments.items() if k != "hand_cells"}  # once
        params = dict(self.ctx.model.params)
        with torch.no_grad():
            for where in cells.values():
                self.applied += int(_set_gate_biases(where, params))

    def change(self, module: nn.Module) -> bool:
        chunks = _gate_chunks(module)
        if chunks == 1:
            return False  # a plain RNN has no gates
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith("bias_"):
                p.zero_()
                if chunks == 4 and pname.startswith("bias_ih"):
                    h = p.shape[0] // 4
                    p[h:2 * h] = 1.0
        return True


class OrthogonalInit(_AtAdoption):
    """At adoption: recurrent weights orthogonal per gate, input weights Xavier-uniform (drawn
    from a forked RNG, so the script's own random stream is the same as without it)."""

    name = "orthogonal-init"
    label = "orthogonal recurrent / Xavier input weights"
    ids = ("exploding-gradients", "vanishing-gradient-through-time", "non-finite", "divergence")

    def change(self, module: nn.Module) -> bool:
        chunks = _gate_chunks(module)
        # every CUDA device the module lives on: its generator is restored too
        devices = sorted({p.device.index or 0 for p in module.parameters() if p.is_cuda})
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            for pname, p in module.named_parameters(recurse=False):
                if pname.startswith("weight_hh"):
                    for piece in p.chunk(chunks, 0):
                        nn.init.orthogonal_(piece)
                elif pname.startswith("weight_ih"):
                    for piece in p.chunk(chunks, 0):
                        nn.init.xavier_uniform_(piece)
        return True


def _set_gate_biases(where: dict[str, list[list[Any]]], params: dict[str, nn.Parameter]) -> bool:
    """One hand-written cell: every gate bias 0, an LSTM's forget gate (``f``) 1. A bias summed
    from several terms gets its value in the first, 0 in the others. False when a parameter
    named is not in the model (nothing set)."""
    terms = [(gate, *term) for gate, parts in where.items() for term in parts]
    if not terms or any(name not in params or params[name].dim() != 1 or stop > params[name].shape[0]
                        for _, name, _, stop, _ in terms):
        return False
    first: set[str] = set()
    for gate, name, start, stop, sign in terms:
        value = 1.0 * sign if gate == "f" and gate not in first else 0.0
        first.add(gate)
        params[name][start:stop] = value
    return True


def _split_hx(args: Any, kwargs: Any) -> tuple[Any, bool]:
    if len(args) > 1:
        return args[1], True
    return kwargs.get("hx"), False


class DetachState(Treatment):
    """Detach the state handed to a recurrent module (backprop stops at the batch)."""

    name = "detach-state"
    label = "carried state detached"
    ids = ("undetached-state",)

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> "tuple[Any, Any] | None":
        hx, positional = _split_hx(args, kwargs)
        if hx is None:
            return None
        needs = any(t.requires_grad for t in (hx if isinstance(hx, (tuple, list)) else (hx,)) if isinstance(t, torch.Tensor))
        if not needs:
            return None
        detached = type(hx)(t.detach() for t in hx) if isinstance(hx, (tuple, list)) else hx.detach()
        self.applied += 1
        if positional:
            return (args[0], detached, *args[2:]), kwargs
        return args, {**kwargs, "hx": detached}


class StandardizeInputs(Treatment):
    """Standardise each recurrent module's input features with statistics of the first
    batches it sees (fixed after 20 calls, so the model trains on a stable transform)."""

    name = "standardize-inputs"
    label = "recurrent inputs standardised"
    ids = ("unnormalized-inputs",)
    warmup: ClassVar[int] = 20

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self._stats: dict[int, list[Any]] = {}

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> "tuple[Any, Any] | None":
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None  # a PackedSequence or token ids: left alone
        x = args[0]
        with torch.no_grad():
            flat = x.detach().reshape(-1, x.shape[-1]).float()
            stats = self._stats.setdefault(id(module), [0, torch.zeros_like(flat[0]), torch.zeros_like(flat[0])])
            if stats[0] < self.warmup:
                stats[0] += 1
                stats[1] += (flat.mean(0) - stats[1]) / stats[0]
                stats[2] += (flat.var(0, unbiased=False) - stats[2]) / stats[0]
            mean, std = stats[1].to(x.dtype), stats[2].clamp_min(1e-12).sqrt().to(x.dtype)
        self.applied += 1
        return ((x - mean) / (std + 1e-6), *args[1:]), kwargs


class EvalForNoGradPasses(Treatment):
    """Run every call of the model made without gradients (an evaluation pass) in ``eval()``
    mode, and give it back its training mode after the call."""

    name = "eval-mode"
    label = "eval() around no-grad passes"
    ids = ("eval-in-train-mode",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self._restore: list[nn.Module] = []

    def attach(self, ctx: Context) -> list[Any]:
        for root in ctx.model.roots.values():
            ctx.forward_hook(root, self._after)
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        if not torch.is_grad_enabled() and module.training:
            module.eval()
            self._restore.append(module)
            self.applied += 1

    def _after(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._restore and self._restore[-1] is module:
            self._restore.pop().train()


#: every treatment, in the order trials are listed
TREATMENTS: tuple[type[Treatment], ...] = (
    LearningRateDown, LearningRateUp, ClipGradients, ZeroGradients, ForgetGateBias, OrthogonalInit, DetachState, StandardizeInputs,
    EvalForNoGradPasses,
)


def get_treatment(name: str) -> type[Treatment]:
    for t in TREATMENTS:
        if t.name == name:
            return t
    raise KeyError(f"no treatment {name!r}; treatments: {', '.join(t.name for t in TREATMENTS)}")


def treatments_for(findings: "list[Finding] | tuple[Finding, ...]") -> list[tuple[type[Treatment], list[str]]]:
    """Each treatment that treats one of ``findings``, with the ids it treats there."""
    out = []
    for t in TREATMENTS:
        ids = list(dict.fromkeys(f.id for f in findings if t.treats(f)))
        if ids:
            out.append((t, ids))
    return out
