"""The options of the spectral-reach analysis (:class:`ReachOptions`) and of one LNP measurement
(:class:`LNPOptions`), each validated once.

Light on purpose: the command line reads the defaults from here to build its parser without
importing the analysis (xarray), and the torch adapter reads :class:`LNPOptions` from here.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import BandscopeInputError

T = TypeVar("T")

__all__ = ["ReachOptions", "LNPOptions", "options_from_keywords", "ESTIMATOR_NAMES", "BACKEND_NAMES", "UNIT_NAMES",
           "legacy_estimator", "ESTIMATOR_RENAMED"]


@dataclass(frozen=True)
class ReachOptions:
    """Options of the spectral-reach analysis, shared by the functions, the CLI and the report.

    Attributes
    ----------
    last_k : int
        Windows averaged for the last-window mean (default 3).
    slope_start : int or None
        First optimizer step of the late log-log slope; ``None``: a tenth of the run's last LNP
        step (the last decade of training).
    probe_bins : int
        Normalised-time bins τ of the §5.1 probe ratio (default 10, as Figure 4).
    probe_fraction : float
        Top fraction of P kept per probe window before averaging (appendix C.1, default 0.1).
    max_assignments : int
        Largest number of run-to-size assignments the exact permutation test enumerates.
    """

    last_k: int = 3
    slope_start: int | None = None
    probe_bins: int = 10
    probe_fraction: float = 0.1
    max_assignments: int = 2_000_000

    def __post_init__(self) -> None:
        if int(self.last_k) < 1:
            raise BandscopeInputError(f"last_k = {self.last_k!r}: need at least one window; pass last_k >= 1")
        if self.slope_start is not None and int(self.slope_start) < 0:
            raise BandscopeInputError(f"slope_start = {self.slope_start!r}: need a step >= 0 (or None)")
        if int(self.probe_bins) < 1:
            raise BandscopeInputError(f"probe_bins = {self.probe_bins!r}: need >= 1")
        if not 0 < float(self.probe_fraction) <= 1:
            raise BandscopeInputError(f"probe_fraction = {self.probe_fraction!r}: need 0 < fraction <= 1")


#: the estimators of the network scale 𝒩 = Tr K (``bandscope.torch.lnp.ESTIMATOR_TABLE`` holds one
#: function for each; docs/lnp.md, "Estimators")
ESTIMATOR_NAMES = ("hutchinson", "batch-hutchinson", "exact")
#: the routes to per-sample gradient norms (docs/lnp.md, "Choosing the backend")
BACKEND_NAMES = ("auto", "hooks", "vmap")
#: the named loss-reduction unit counts M (spectral reach A.2)
UNIT_NAMES = ("samples", "elements", "targets", "sum")


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _flag(name: str, value: object, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise BandscopeInputError(f"{where}: {name} = {value!r} is not a flag; pass True or False")


def _units(name: str, value: object, where: str) -> object:
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        if value not in UNIT_NAMES:
            raise BandscopeInputError(f"{where}: {name} = {value!r} is not a unit count; pass one of {UNIT_NAMES}, "
                                      "a positive number or a callable (outputs, targets) -> M")
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        m = float(value)
        if math.isfinite(m) and m > 0:
            return int(value) if isinstance(value, numbers.Integral) else m
    raise BandscopeInputError(f"{where}: {name} = {value!r} is not a unit count M (the number the loss divides "
                              f"by, spectral reach A.2); pass a positive number, one of {UNIT_NAMES} or a "
                              "callable (outputs, targets) -> M")


def _is_default(value: object, default: object) -> bool:
    return value is default or (isinstance(value, (str, bool, int)) and type(value) is type(default)
                                and value == default)


def options_from_keywords(cls: type[T], options: T | None, where: str, given: Mapping[str, object]) -> T:
    """An options dataclass ``cls`` from either a typed ``options`` or the legacy keywords ``given``.

    The one rule by which bandscope's functions that take both an options object and its fields
    as keywords (kept for existing calls) resolve them: keywords equal to the field's default
    (None for a field with a default factory) count as not given; without ``options`` the rest
    build a ``cls``; with ``options`` any of them is refused, so a call has one source of truth.
    Validation is ``cls``'s own, once.

    Parameters
    ----------
    cls : type
        A dataclass whose ``__post_init__`` validates.
    options : cls or None
        The typed options, if the caller gave them.
    where : str
        The call, named in every error.
    given : mapping of str to object
        Field name -> value of each keyword of the call.

    Returns
    -------
    cls

    Examples
    --------
    >>> options_from_keywords(ReachOptions, None, "f", {"last_k": 2}).last_k
    2
    """
    # a field built by a default factory has None as its legacy keyword's default
    fields = {f.name: None if f.default is dataclasses.MISSING else f.default
              for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise BandscopeInputError(f"{where}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    changed = {k: v for k, v in given.items() if not _is_default(v, fields[k])}
    if options is None:
        return cls(**changed)
    if not isinstance(options, cls):
        raise BandscopeInputError(f"{where}: {options!r} is not a {cls.__name__}; pass {cls.__module__}."
                                  f"{cls.__name__}(...)")
    if changed:
        raise BandscopeInputError(f"{where}: the {cls.__name__} and the keyword(s) {sorted(changed)} both set "
                                  f"options; put them in the {cls.__name__} (dataclasses.replace(options, ...))")
    return options


@dataclass(frozen=True)
class LNPOptions:
    """Every option of one LNP measurement, validated once (spectral reach §3, appendix B.1).

    The one way options reach :func:`bandscope.torch.measure_lnp` and its estimators: the
    function, :class:`bandscope.torch.LNPHook` and :class:`bandscope.torch.Monitor` take it as
    ``options=`` (the monitor as ``lnp_options=``), and each field keeps its name all the way to
    the estimator. Plain values only (no torch), so the core and its docs can see it.

    Parameters
    ----------
    estimator : {"hutchinson", "batch-hutchinson", "exact"}
        Estimator of the network scale 𝒩 = Tr K = Σ_n ||J_n||_F² (docs/lnp.md, "Estimators");
        the legacy keyword ``network_scale=`` of ``measure_lnp`` and ``LNPHook``.
    n_probes : int or None
        Rademacher probes per batch for the Hutchinson estimators (>= 1; >= 2 gives a standard
        error). None: ``max(2, 1 + ceil(32 / N))`` for a batch of N samples.
    n_units, n_units_b : int, float, str, callable or None
        Loss-reduction unit counts M of batch A and B (A.2), only for the ``*_norm`` scales: a
        positive number, one of ``"samples"``, ``"elements"``, ``"targets"``, ``"sum"``, or
        ``f(outputs, targets) -> M``; None infers M from the loss function.
    bands : bool
        Add the Haar-band split of batch A (image outputs).
    backend : {"auto", "hooks", "vmap"}
        Route to the per-sample gradient norms (docs/lnp.md, "Choosing the backend").
    output : key, int, callable or None
        Selects the measured tensor of the model's output (``out[output]`` or ``output(out)``).
    exact_output_layer : bool
        Hutchinson estimators: the output layer's share of 𝒩 exactly, the other layers probed.
    chunk_size : int or None
        Samples per ``torch.func.vmap`` chunk (``backend="vmap"``; >= 1); None: all at once.
    distributed : bool or None
        Reduce to the statistics of the global batch under ``torch.distributed``; None: whenever
        a process group of more than one process is initialised.
    process_group : object or None
        The ``torch.distributed`` group to reduce over (default: the world); held as given.

    Raises
    ------
    BandscopeInputError
        A value out of its domain, named with the field and the fix.

    Examples
    --------
    >>> LNPOptions(estimator="exact").estimator
    'exact'
    >>> LNPOptions(n_probes=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: LNPOptions: n_probes = 0: need at least one probe; pass n_probes >= 1 ...
    """

    estimator: str = "hutchinson"
    n_probes: int | None = None
    n_units: object = None
    n_units_b: object = None
    bands: bool = False
    backend: str = "auto"
    output: object = None
    exact_output_layer: bool = True
    chunk_size: int | None = None
    distributed: bool | None = None
    process_group: object = None

    def __post_init__(self) -> None:
        where = type(self).__name__
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.estimator not in ESTIMATOR_NAMES:
            raise BandscopeInputError(f"{where}: estimator = {self.estimator!r} is not an estimator of the network "
                                      f"scale; pass one of {ESTIMATOR_NAMES}")
        if self.backend not in BACKEND_NAMES:
            raise BandscopeInputError(f"{where}: backend = {self.backend!r} is not a backend; pass one of "
                                      f"{BACKEND_NAMES}")
        for name, what in (("n_probes", "probe"), ("chunk_size", "sample per chunk")):
            v = getattr(self, name)
            if v is None:
                continue
            integral = _is_int(v) or (isinstance(v, numbers.Real) and not isinstance(v, bool)
                                      and float(v).is_integer())
            if not integral or int(v) < 1:
                raise BandscopeInputError(f"{where}: {name} = {v!r}: need at least one {what}; pass {name} >= 1 "
                                          "(or None for the default)")
            put(name, int(v))
        for name in ("n_units", "n_units_b"):
            put(name, _units(name, getattr(self, name), where))
        for name in ("bands", "exact_output_layer"):
            put(name, _flag(name, getattr(self, name), where))
        if self.distributed is not None:
            put("distributed", _flag("distributed", self.distributed, where))
        if not (self.output is None or callable(self.output) or isinstance(self.output, (str, int))) \
                or isinstance(self.output, bool):
            raise BandscopeInputError(f"{where}: output = {self.output!r} does not select an output; pass a key, "
                                      "an index, a callable out -> tensor, or None (the tensor returned, or its "
                                      ".logits)")

    @classmethod
    def from_keywords(cls, options: LNPOptions | None, where: str, given: Mapping[str, object]) -> LNPOptions:
        """The options of a call that takes both ``options=`` and the individual keywords:
        :func:`options_from_keywords` with ``cls = LNPOptions`` (its parameters and rule; ``where``
        names the call, ``"measure_lnp"``, ``"LNPHook"``, ...).

        Examples
        --------
        >>> LNPOptions.from_keywords(None, "f", {"n_probes": 4}).n_probes
        4
        """
        return options_from_keywords(cls, options, where, given)


#: the DeprecationWarning of the keyword ``network_scale=`` (``{}``: the value given)
ESTIMATOR_RENAMED = ("the keyword network_scale= (the estimator of the network scale) is deprecated: it collides "
                     "with the output statistic network_scale; pass estimator={!r} (or LNPOptions(estimator=...))")


def legacy_estimator(network_scale: object, estimator: str, where: str) -> str:
    """The estimator named by the deprecated keyword ``network_scale=``, checked against ``estimator=``.

    The caller warns (``DeprecationWarning``, :data:`ESTIMATOR_RENAMED`) with its own stack level.

    Parameters
    ----------
    network_scale : object
        The value of the legacy keyword.
    estimator : str
        The value of ``estimator=`` in the same call (its default unless the caller set it).
    where : str
        The call, named in the error.

    Returns
    -------
    str
        The estimator's name.

    Examples
    --------
    >>> legacy_estimator("exact", "hutchinson", "measure_lnp")
    'exact'
    """
    if network_scale not in ESTIMATOR_NAMES:
        raise BandscopeInputError(f"{where}: network_scale must be one of {ESTIMATOR_NAMES}, got {network_scale!r} "
                                  "(the keyword is deprecated: pass estimator=...)")
    if estimator not in (LNPOptions.estimator, network_scale):
        raise BandscopeInputError(f"{where}: estimator={estimator!r} and the deprecated network_scale="
                                  f"{network_scale!r} disagree; pass estimator= alone")
    return str(network_scale)
