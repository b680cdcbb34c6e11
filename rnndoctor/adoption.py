"""What the watch adopted: the roots' modules, parameters and recurrent modules, with the
names the user gave them (a ``torch.compile`` wrapper adds none), for the probes
(``ModelView``) and for ``meta.json``'s ``model``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import compiled
from .probes.base import ModelView
from .probes.nonfinite import RECURRENT_TYPES


def survey(roots: dict[str, nn.Module], inside: set[int]) -> tuple[ModelView, dict[str, Any]]:
    """The model view of ``roots`` and its ``meta['model']`` entry."""
    view = ModelView(roots=dict(roots), inside=inside)
    modules_meta, recurrent_meta = [], []
    multi = len(roots) > 1
    seen_params: set[int] = set()
    device = None
    for root_name, root in roots.items():
        for sub_name, m in compiled.user_named_modules(root):
            qual = ".".join(x for x in ((root_name if multi else ""), sub_name) if x) or root_name
            view.names[id(m)] = qual
            if compiled.is_wrapper(m):
                continue  # torch.compile's wrapper: the module it wraps is listed under its name
            modules_meta.append({"name": qual, "type": type(m).__name__})
            if isinstance(m, nn.modules.dropout._DropoutNd) or (isinstance(m, nn.RNNBase) and m.num_layers > 1):
                view.dropouts.append((qual, m))
            if isinstance(m, RECURRENT_TYPES):
                view.recurrent.append((qual, m))
                recurrent_meta.append({"name": qual, "type": type(m).__name__, **rnn_config(m)})
        for p_name, p in compiled.user_named_parameters(root):
            if p.requires_grad and id(p) not in seen_params:
                seen_params.add(id(p))
                view.params.append(((f"{root_name}.{p_name}" if multi else p_name), p))
                device = device or p.device
    view.device = device or torch.device("cpu")
    fused = [m for _, m in view.recurrent if isinstance(m, nn.RNNBase)]
    view.batch_first = bool(fused[0].batch_first) if fused else True
    meta = {
        "roots": list(roots),
        "modules": modules_meta,
        "recurrent": recurrent_meta,
        "params": [{"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in view.params],
        "device": str(view.device),
    }
    return view, meta


def rnn_config(m: nn.Module) -> dict[str, Any]:
    keys = ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first", "proj_size", "mode")
    return {k: getattr(m, k) for k in keys if hasattr(m, k)}


def unseen(view: ModelView, hooks_ran: set[int], steps: int) -> list[str]:
    """Models and recurrent modules whose hooks never ran in a run that had steps: with
    Dynamo loaded, their calls were traced (a compiled function, a cell inside a compiled
    module), where our hooks are left out."""
    if not steps or not compiled.dynamo_loaded():
        return []
    hooked = [*view.roots.values()] + [m for r in view.roots.values() for m in r.modules() if isinstance(m, RECURRENT_TYPES)]
    return sorted({view.names[id(m)] for m in hooked if id(m) not in hooks_ran and id(m) in view.names})


def compiled_note(view: ModelView, hooks_ran: set[int], steps: int) -> dict[str, Any] | None:
    """``meta['model']['compiled']``: which modules run compiled and what is not seen there."""
    inside = sorted({view.names[i] for i in view.inside if i in view.names})
    missing = unseen(view, hooks_ran, steps)
    if inside or missing:
        return {"modules": inside, "unseen": missing, "note": compiled.NOTE}
    return None
