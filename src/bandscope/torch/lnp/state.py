"""Leave the model as found: modes, buffers, RNG; BatchNorm with frozen batch statistics."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["preserved", "freeze_batchnorm_hooks", "make_generator"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore modes, buffers (running stats), buffer identities and the torch RNG state."""
    modes = {m: m.training for m in model.modules()}
    bufs = {(m, k): (b, None if b is None else b.detach().clone())
            for m in model.modules() for k, b in m._buffers.items()}
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        for m, t in modes.items():
            m.training = t
        with torch.no_grad():
            for (m, k), (orig, copy) in bufs.items():
                if orig is not None and copy is not None:
                    orig.copy_(copy)
                m._buffers[k] = orig
        torch.set_rng_state(rng)


def freeze_batchnorm_hooks(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Pre-hooks: a BatchNorm that normalises with the batch statistics (training mode, or eval mode
    without running statistics) uses them held constant."""
    handles = []

    def pre(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        x = inp[0].detach()
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        mod._buffers["running_mean"] = mean
        mod._buffers["running_var"] = var
        mod.training = False
        return None

    for m in model.modules():
        # eval mode without running statistics normalises with the batch's too (torch's bn_training)
        if isinstance(m, _BN) and (m.training or (m.running_mean is None and m.running_var is None)):
            handles.append(m.register_forward_pre_hook(pre))
    return handles


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """``seed`` itself if a generator, else a new CPU generator seeded with it (None: from the system)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(random.SystemRandom().randrange(2**62) if seed is None else int(seed))
    return g


