"""Parameter time while training: exact arc length per optimizer step and chords at checkpoints.

Key search A.7 defines parameter time between saved checkpoints,
``s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2`` over all trainable parameters (chords), and
notes that this underestimates the optimizer path. :class:`ParamTimeTracker` gives both:

- ``arc_length``: ``sum_t ||theta_t - theta_{t-1}||_2`` over *every* optimizer step;
- ``param_time``: the chord sum between the checkpoints marked with :meth:`checkpoint`.

Per step the work is three fused ``torch._foreach_*`` calls on the parameters' device
(subtract, norm, copy) plus a float64 accumulation in a device tensor: no host sync. The host
only reads the numbers at :meth:`checkpoint`.

Distributed training
--------------------
``mode="replicated"`` (DistributedDataParallel; also the single-process default): every rank
holds the full parameters, so the local norm is the global norm -- counted once, no collective.
``mode="sharded"`` (FSDP / ZeRO / DTensor shards): each rank holds a disjoint shard, so
``||d||^2 = sum_ranks ||d_rank||^2``; the squared norms are all-reduced (SUM) before the square
root, every step and at checkpoints. Padding of flat shards is zero on every step, so it adds
nothing. ``mode="auto"`` picks sharded when a parameter is a ``DTensor``.

Where the path starts, and moving the model
-------------------------------------------
Arc length and chords start at the same place: the parameters at construction, or at the first
:meth:`ParamTimeTracker.checkpoint` if it comes before any :meth:`ParamTimeTracker.step`. The
tracker follows its parameters by identity and watches their storage: after ``model.to(device)``,
``model.double()`` or ``p.data = ...`` (a new storage behind the same ``Parameter``) it moves its
saved copies to the new device/dtype (values kept) and goes on; if the module it was built from
now holds *different* ``Parameter`` objects (``torch.__future__``'s overwrite-on-conversion mode)
it re-reads them when no step has been counted yet, and raises with the fix otherwise.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .device import wide_dtype

__all__ = ["ParamTimeTracker"]


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


class ParamTimeTracker:
    """Accumulate exact arc length every optimizer step and chord parameter time at checkpoints.

    Parameters
    ----------
    params : nn.Module or iterable of Tensors
        The parameters whose path is measured. A module means its parameters with
        ``requires_grad`` (``trainable_only=False`` for all of them).
    mode : {"auto", "replicated", "sharded"}
        See the module docstring.
    process_group : optional
        Group for the all-reduce in sharded mode (default: the world).

    Notes
    -----
    Call :meth:`step` after every ``optimizer.step()`` (or :meth:`attach` the tracker to the
    optimizer once), and :meth:`checkpoint` at every saved checkpoint (the first call, before
    training, is checkpoint 0 with ``param_time == 0``). Norms are taken in the parameters'
    dtype per tensor and accumulated in float64. Create the tracker after the model is on its
    final device (it keeps one copy of the parameters for the previous step and one for the
    previous checkpoint).

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> tr = ParamTimeTracker([w]); tr.checkpoint()
    (0.0, 0.0)
    >>> with torch.no_grad():
    ...     w += torch.tensor([3.0, 4.0])
    >>> tr.step()
    >>> with torch.no_grad():
    ...     w -= torch.tensor([3.0, 4.0])
    >>> tr.step()
    >>> tr.checkpoint()  # back at the start: chord 0, arc 5 + 5
    (0.0, 10.0)
    """

    def __init__(self, params: torch.nn.Module | Iterable[torch.Tensor], *, mode: str = "auto",
                 process_group: Any = None, trainable_only: bool = True) -> None:
        self._module = params if isinstance(params, torch.nn.Module) else None
        self._trainable_only = trainable_only
        self.params: list[torch.Tensor] = (self._module_params() if isinstance(params, torch.nn.Module)
                                           else list(params))
        if not self.params:
            raise ValueError("ParamTimeTracker got no parameters")
        if mode not in ("auto", "replicated", "sharded"):
            raise ValueError(f"mode must be 'auto', 'replicated' or 'sharded', got {mode!r}")
        if mode == "auto":
            mode = "sharded" if any(hasattr(p, "to_local") for p in self.params) else "replicated"
        self.mode = mode
        self.process_group = process_group
        self._locals = [_local(p.detach()) for p in self.params]
        self._ptrs = self._storage_keys()
        dev = self._locals[0].device
        self._prev = [t.clone() for t in self._locals]
        self._snap = [t.clone() for t in self._locals]
        self._arc = torch.zeros((), dtype=wide_dtype(dev), device=dev)
        self._arc_at_ckpt = 0.0
        self.param_time = 0.0
        self.steps = 0
        self.n_checkpoints = 0
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    # -- following the parameters -------------------------------------------------------
    def _module_params(self) -> list[torch.Tensor]:
        if self._module is None:
            return self.params
        return [p for p in self._module.parameters() if p.requires_grad or not self._trainable_only]

    def _storage_keys(self) -> list:
        return [(t.data_ptr(), t.dtype, t.device) for t in self._locals]

    def _refresh(self, *, identity: bool = True) -> None:
        """Follow the parameters' storage (cheap: one pointer per tensor) and re-snapshot when it
        changed, e.g. after ``model.to(device)`` / ``model.double()`` (values are kept, so no
        distance is invented); see the module docstring."""
        if identity and self._module is not None and self.mode != "sharded":
            current = self._module_params()
            if len(current) != len(self.params) or any(a is not b for a, b in zip(current, self.params)):
                self._replace_params(current)
        if self.mode == "sharded":  # DTensor locals are re-read each time anyway
            return
        if any(p.data_ptr() != k[0] for p, k in zip(self.params, self._ptrs)):
            self._relocate()

    def _replace_params(self, current: list) -> None:
        if self.steps > 0 or len(current) != len(self.params):
            raise RuntimeError(
                "the model now holds different Parameter objects than when the ParamTimeTracker was "
                f"created ({len(current)} vs {len(self.params)} tensors, after {self.steps} counted steps); "
                "the optimizer probably still updates the old ones. Create the tracker (and the "
                "optimizer) after model.to(...)/model.double(), or build a new tracker now")
        self.params = current
        self._relocate()

    @torch.no_grad()
    def _relocate(self) -> None:
        self._locals = [_local(p.detach()) for p in self.params]
        for old, new in zip(self._prev, self._locals):
            if old.shape != new.shape:
                raise RuntimeError(f"a tracked parameter changed shape {tuple(old.shape)} -> {tuple(new.shape)}; "
                                   "create a new ParamTimeTracker for the new model")
        self._prev = [o.to(device=n.device, dtype=n.dtype, copy=True) for o, n in zip(self._prev, self._locals)]
        self._snap = [o.to(device=n.device, dtype=n.dtype, copy=True) for o, n in zip(self._snap, self._locals)]
        dev = self._locals[0].device
        if self._arc.device != dev:
            self._arc = self._arc.to(device=dev, dtype=wide_dtype(dev))
        self._ptrs = self._storage_keys()

    # -- arithmetic -------------------------------------------------------------------
    def _sq_dist(self, ref: list[torch.Tensor], *, inplace: bool) -> torch.Tensor:
        """sum over tensors of ||theta - ref||^2 (float64 device scalar, all-reduced if sharded).

        With ``inplace`` the difference is written into ``ref`` (saves an allocation; the caller
        then overwrites ``ref`` with the current parameters)."""
        cur = [_local(p.detach()) for p in self.params] if self.mode == "sharded" else self._locals
        diffs: Sequence[torch.Tensor]
        if inplace:
            torch._foreach_sub_(ref, cur)  # ref <- ref - theta ; norm is sign-blind
            diffs = ref
        else:
            diffs = torch._foreach_sub(cur, ref)
        norms = torch._foreach_norm(diffs)
        sq = torch.stack(norms).to(torch.float64).square().sum()
        if self.mode == "sharded":
            import torch.distributed as dist

            dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=self.process_group)
        return sq

    @torch.no_grad()
    def step(self) -> None:
        """Add ``||theta_t - theta_{t-1}||_2`` to the arc length (no host sync)."""
        self._refresh(identity=self.steps == 0)  # module re-read on the first step, then at checkpoints
        sq = self._sq_dist(self._prev, inplace=True)
        self._arc += sq.sqrt()
        cur = [_local(p.detach()) for p in self.params] if self.mode == "sharded" else self._locals
        torch._foreach_copy_(self._prev, cur)
        self.steps += 1

    @torch.no_grad()
    def checkpoint(self) -> tuple[float, float]:
        """Mark a saved checkpoint; return ``(param_time, arc_length)`` (host sync here).

        ``param_time`` adds the chord ``||theta_k - theta_{k-1}||_2`` to the previous
        checkpoint. The chord and the arc start at the same place: a first call before any
        :meth:`step` is checkpoint 0 (``param_time == 0``, and both start here); a first call after
        ``N`` steps measures the chord from the parameters at construction, where the arc
        started too.
        """
        self._refresh()
        if self.n_checkpoints == 0 and self.steps == 0:  # checkpoint 0: both paths start here
            torch._foreach_copy_(self._prev, self._locals if self.mode != "sharded"
                                 else [_local(p.detach()) for p in self.params])
        else:
            chord = float(self._sq_dist(self._snap, inplace=True).sqrt())
            self.param_time += chord
        cur = [_local(p.detach()) for p in self.params] if self.mode == "sharded" else self._locals
        torch._foreach_copy_(self._snap, cur)
        self.n_checkpoints += 1
        return self.param_time, self.arc_length

    @property
    def arc_length(self) -> float:
        """Exact arc length so far (host sync)."""
        return float(self._arc)

    # -- convenience ------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> ParamTimeTracker:
        """Call :meth:`step` automatically after every ``optimizer.step()``."""
        self._hook = optimizer.register_step_post_hook(lambda *_: self.step())
        return self

    def detach(self) -> None:
        """Remove the hook installed by :meth:`attach`."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: the arc length, the chord sum, the counts and the
        chord start (the parameters at the last :meth:`checkpoint`, as CPU copies), so a resumed
        tracker's next chord is measured from the same place as an uninterrupted one's. Plain
        Python numbers and tensors (loads with ``torch.load(weights_only=True)``)."""
        return {"arc_length": self.arc_length, "param_time": self.param_time, "steps": self.steps,
                "n_checkpoints": self.n_checkpoints,
                "snapshot": [t.detach().to("cpu", copy=True) for t in self._snap]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; the parameters must already be restored to the step the
        state was taken at (they become the previous step). The chord start is the saved
        ``snapshot`` when present (exact resume between checkpoints), else the current parameters
        (a state taken at a checkpoint)."""
        self._refresh()
        self._arc.fill_(float(state["arc_length"]))
        self.param_time = float(state["param_time"])
        self.steps = int(state["steps"])
        self.n_checkpoints = int(state["n_checkpoints"])
        cur = [_local(p.detach()) for p in self.params]
        self._locals = cur if self.mode != "sharded" else self._locals
        torch._foreach_copy_(self._prev, cur)
        snap = state.get("snapshot")
        if snap is None:
            torch._foreach_copy_(self._snap, cur)
            return
        if len(snap) != len(self._snap) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(snap, self._snap)):
            raise ValueError(f"the saved parameter-time state holds {len(snap)} tensors of other shapes than this "
                             f"model's {len(self._snap)} trainable tensors; resume with the same model")
        for dst, src in zip(self._snap, snap):
            dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
