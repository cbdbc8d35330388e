"""The statistics of one measured batch (:class:`BatchStatistics`), before they become a Dataset.

What :func:`bandscope.torch.measure_lnp` computes per batch, one typed field each (spectral reach
§3, appendix B.1; ``docs/lnp.md``); the reduction across ranks
(:func:`bandscope.torch.lnp.distributed.reduce_stats`) returns another one, and the Dataset with
units and definitions is built from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["BatchStatistics"]


@dataclass(frozen=True)
class BatchStatistics:
    """ℒ, 𝒩, ||∇L||² and their companions for one batch, as measured (raw: the loss as reduced).

    Parameters
    ----------
    loss : float
        The loss on the batch as reduced by ``loss_fn``.
    loss_scale : float
        ℒ = ||dL/df||² (spectral reach §3).
    grad_norm_sq : float
        ||∇L||² over the trainable parameters.
    n_units : float
        Loss-reduction unit count M (A.2); NaN when unknown.
    n_units_how : str
        How M was found, or why it is unknown.
    n_samples, n_outputs : int
        Samples in the batch and output coordinates per sample.
    n_probes : int
        Probes drawn by a Hutchinson estimator (the default's value when not given).
    network_scale, network_scale_se : float
        The estimate of 𝒩 = Tr K = Σ_n ||J_n||_F² and its standard error (0 for exact, NaN with
        one probe).
    network_scale_probes : list of float or None
        The per-probe estimates (Hutchinson), else None.
    exact_output_layer : str
        The layer whose share of 𝒩 was taken exactly ("" if none).
    network_scale_se_dof : float
        Welch–Satterthwaite degrees of freedom of the standard error (NaN when not estimated).
    backend_note : str
        What the route noted while measuring ("" if nothing).
    grad : list of Tensor
        ∇L per trainable parameter (for the cross term ∇L_A·∇L_B).
    band_grad_dot, band_grad_norm_sq, band_loss_scale : list of float or None
        Per Haar band (``bands=True``): ∇L_i·∇L, ||Jᵀg_i||², ||g_i||².
    band_grads : list of list of Tensor or None
        The band gradients, kept only to be all-reduced across ranks.
    world_size : int
        Processes whose shards the statistics cover.
    """

    loss: float
    loss_scale: float
    grad_norm_sq: float
    n_units: float
    n_units_how: str
    n_samples: int
    n_outputs: int
    n_probes: int
    network_scale: float
    network_scale_se: float
    network_scale_probes: list[float] | None
    exact_output_layer: str
    network_scale_se_dof: float
    backend_note: str
    grad: list[torch.Tensor]
    band_grad_dot: list[float] | None = None
    band_grad_norm_sq: list[float] | None = None
    band_loss_scale: list[float] | None = None
    band_grads: list[list[torch.Tensor]] | None = None
    world_size: int = 1

    def __getitem__(self, name: str) -> object:
        """Read a field by its name (the Dataset builder's reading); an absent band field is a KeyError."""
        if name not in _FIELDS or (name.startswith("band_") and getattr(self, name) is None):
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: object = None) -> object:
        """A field by name, or ``default`` when it is not a field or not measured."""
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_FIELDS = frozenset(f.name for f in dataclasses.fields(BatchStatistics))
