"""The options of :class:`~bandscope.torch.Monitor` by concern, each validated once: the band probe
(:class:`ProbeOptions`), the run's identity (:class:`RunIdentity`), where metrics go
(:class:`SinkOptions`) and live forecasting (:class:`LiveForecastOptions`); the LNP measurement's
are :class:`bandscope.lnp.options.LNPOptions`, the forecast method's
:class:`bandscope.keysearch.forecasting.ForecastOptions`.

Each field has the name of the keyword of the piece that consumes it (``ProbeOptions.batch_size``
is :class:`~bandscope.torch.BandProbe`'s ``batch_size``, ``RunIdentity.arch`` the
:class:`~bandscope.torch.RunRecorder`'s ``arch``), so nothing is renamed on the way.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import torch

from ..errors import BandscopeInputError
from ..lnp.options import LNPOptions, options_from_keywords

if TYPE_CHECKING:
    from ..keysearch.forecasting import ForecastOptions
    from .lnp.hook import LNPHook

__all__ = ["ProbeOptions", "RunIdentity", "SinkOptions", "LiveForecastOptions", "LNPOptions", "options_from_keywords",
           "live_forecast_options", "callback_forecast_options", "METRICS_MODES", "callback_monitor_options",
           "FORECAST_KEYWORDS", "LEGACY_KEYWORDS", "NEGATED_KEYWORDS", "legacy_default", "MonitorKeywords",
           "MonitorOptions", "monitor_options", "callback_defaults", "ScalarWriter", "ProgressBar"]

#: what :class:`SinkOptions` sends to the loggers (``docs/torch.md``, "Metrics")
METRICS_MODES = ("compact", "all")


class ScalarWriter(Protocol):
    """What the monitor logs to: a TensorBoard ``SummaryWriter`` or anything with its ``add_scalar``
    (``add_images``, ``add_custom_scalars``, ``flush`` and ``close`` are used when present)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> object:
        """Log one scalar."""


class ProgressBar(Protocol):
    """A progress bar whose postfix shows the checkpoint's short metrics (a tqdm bar)."""

    def set_postfix(self, ordered_dict: Mapping[str, object], refresh: bool = ...) -> object:
        """Show ``ordered_dict`` after the bar."""


def _whole(value: object) -> bool:
    """An integer, or a real number with an integer value (``45.0``); never a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or float(value).is_integer()


@dataclass(frozen=True)
class ProbeOptions:
    """How the monitor's :class:`~bandscope.torch.BandProbe` measures the panel's band losses.

    Parameters
    ----------
    batch_size : int
        Panel images per forward pass (>= 1). Legacy ``Monitor`` keyword: ``probe_batch_size``.
    autocast : torch.dtype or None
        Run the probe's forward under ``torch.autocast`` with this dtype (``probe_autocast``).
    dtype : torch.dtype or None
        dtype of the band arithmetic; None: float64 for float64 models, else float32 with
        float64 sums (``band_dtype``).
    output : callable or None
        Selects the reconstruction from the model's output (``probe_output``).

    Examples
    --------
    >>> ProbeOptions(batch_size=64).batch_size
    64
    >>> ProbeOptions(batch_size=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: ProbeOptions: batch_size = 0: need at least one image per ...
    """

    batch_size: int = 256
    autocast: torch.dtype | None = None
    dtype: torch.dtype | None = None
    output: Callable[[Any], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not _whole(self.batch_size) or int(self.batch_size) < 1:
            raise BandscopeInputError(f"ProbeOptions: batch_size = {self.batch_size!r}: need at least one image per "
                                      "forward pass; pass batch_size >= 1")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        for name in ("autocast", "dtype"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, torch.dtype) and v.is_floating_point):
                raise BandscopeInputError(f"ProbeOptions: {name} = {v!r} is not a floating-point torch.dtype; pass "
                                          "e.g. torch.bfloat16, or None")
        if self.output is not None and not callable(self.output):
            raise BandscopeInputError(f"ProbeOptions: output = {self.output!r} is not callable; pass a function "
                                      "out -> reconstruction tensor, or None")


@dataclass(frozen=True)
class RunIdentity:
    """Who the run is: the attributes its :class:`~bandscope.torch.RunRecorder` writes to the run
    file (``docs/format.md``, "Run attributes").

    Parameters
    ----------
    name : str or None
        Run name; None: the file's stem, or its directory's name when the stem is ``run``.
    arch : str
        Architecture label.
    seed : int
        Training seed (-1: unknown).
    source : str
        What recorded the run.
    extra_attrs : mapping of str to object
        More attributes of the run file (kept read-only).

    Examples
    --------
    >>> RunIdentity(name="ae-3", seed=45).seed
    45
    >>> RunIdentity(seed=1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: RunIdentity: seed = 1.5 is not an integer; pass the training ...
    """

    name: str | None = None
    arch: str = ""
    seed: int = -1
    source: str = "bandscope.torch.Monitor"
    extra_attrs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("name", "arch", "source"):
            v = getattr(self, name)
            if not (isinstance(v, str) or (name == "name" and v is None)):
                raise BandscopeInputError(f"RunIdentity: {name} = {v!r} is not text; pass a str"
                                          + (" (or None for the file's stem)" if name == "name" else ""))
        if not _whole(self.seed):
            raise BandscopeInputError(f"RunIdentity: seed = {self.seed!r} is not an integer; pass the training seed "
                                      "(or -1 when unknown)")
        object.__setattr__(self, "seed", int(self.seed))
        extra = {} if self.extra_attrs is None else self.extra_attrs
        if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
            raise BandscopeInputError(f"RunIdentity: extra_attrs = {self.extra_attrs!r} is not a mapping of "
                                      "attribute names (str) to values; pass a dict")
        object.__setattr__(self, "extra_attrs", MappingProxyType(dict(extra)))


@dataclass(frozen=True)
class SinkOptions:
    """Where the monitor sends each checkpoint's metrics, besides the run file.

    Parameters
    ----------
    tensorboard : str, Path, SummaryWriter or None
        A ``SummaryWriter`` (anything with ``add_scalar``) or a log directory to make one in.
    progress : tqdm bar or None
        Shows ``s``, ``mse`` and P in its postfix (anything with ``set_postfix``).
    log : callable(metrics: dict, step: int) or None
        Receives every checkpoint's metrics (Weights & Biases, MLflow, a logger, ...).
    metrics : {"compact", "all"}
        What goes to these sinks (:data:`~bandscope.torch.monitor.COMPACT_METRICS` or everything).
    tensorboard_images : int
        With ``tensorboard``, also log the first ``n`` panel reconstructions (>= 0).

    Examples
    --------
    >>> SinkOptions(metrics="all").metrics
    'all'
    >>> SinkOptions(progress=3)
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: SinkOptions: progress = 3 has no set_postfix; pass a tqdm bar (or None)
    """

    tensorboard: ScalarWriter | str | os.PathLike[str] | None = None
    progress: ProgressBar | None = None
    log: Callable[[dict, int], None] | None = None
    metrics: str = "compact"
    tensorboard_images: int = 0

    def __post_init__(self) -> None:
        if self.metrics not in METRICS_MODES:
            raise BandscopeInputError(f"SinkOptions: metrics = {self.metrics!r}: pass 'compact' (default) or 'all'")
        if not _whole(self.tensorboard_images) or int(self.tensorboard_images) < 0:
            raise BandscopeInputError(f"SinkOptions: tensorboard_images = {self.tensorboard_images!r}: pass a count "
                                      ">= 0 of panel reconstructions to log")
        object.__setattr__(self, "tensorboard_images", int(self.tensorboard_images))
        if self.progress is not None and not callable(getattr(self.progress, "set_postfix", None)):
            raise BandscopeInputError(f"SinkOptions: progress = {self.progress!r} has no set_postfix; pass a tqdm "
                                      "bar (or None)")
        if self.log is not None and not callable(self.log):
            raise BandscopeInputError(f"SinkOptions: log = {self.log!r} is not callable; pass a function "
                                      "(metrics, step) -> None (or None)")
        tb = self.tensorboard
        if tb is not None and not hasattr(tb, "add_scalar") and not isinstance(tb, (str, bytes)) \
                and not hasattr(tb, "__fspath__"):
            raise BandscopeInputError(f"SinkOptions: tensorboard = {tb!r} is neither a SummaryWriter (add_scalar) "
                                      "nor a log directory; pass one of them (or None)")


@dataclass(frozen=True)
class LiveForecastOptions:
    """How the :class:`~bandscope.torch.Monitor` forecasts a run while it trains (``docs/torch.md``,
    "Live forecasts"): when, on which thread, within which CPU budget, and with which options of
    :func:`bandscope.forecast` (``docs/forecast.md``).

    Giving one to ``Monitor(forecast=...)`` turns forecasting on.

    Parameters
    ----------
    min_checkpoints : int
        Checkpoints recorded before the first forecast (>= 1; default 8). Legacy ``Monitor``
        keyword: ``forecast_min_checkpoints``.
    budget : float
        Largest ratio of the forecasts' CPU time to the rest of the training process's CPU time,
        in (0, 1] (default 0.02): :class:`~bandscope.torch.forecast_worker.ForecastWorker`'s
        ``budget`` (``forecast_budget``).
    synchronous : bool
        Forecast on the training thread at the checkpoint itself (tests, debugging; default False:
        on the background worker). The worker's ``synchronous``; the legacy keyword
        ``forecast_background`` is its negation.
    nice : int
        Added to the worker thread's nice value on Linux (>= 0; default 10): the worker's ``nice``.
    options : bandscope.keysearch.forecasting.ForecastOptions or None
        The forecast method's options, :func:`bandscope.forecast`'s ``options`` (None: its defaults).
    calibration : Calibration, path, False or None
        :func:`bandscope.forecast`'s ``calibration`` (None: the calibration shipped with the
        package; False: none).

    Examples
    --------
    >>> LiveForecastOptions(budget=0.05).min_checkpoints
    8
    >>> LiveForecastOptions(budget=2.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: LiveForecastOptions: budget = 2.0 is not a fraction in (0, 1] ...
    """

    min_checkpoints: int = 8
    budget: float = 0.02
    synchronous: bool = False
    nice: int = 10
    options: ForecastOptions | None = None
    calibration: object = None

    def __post_init__(self) -> None:
        if not _whole(self.min_checkpoints) or int(self.min_checkpoints) < 1:
            raise BandscopeInputError(f"LiveForecastOptions: min_checkpoints = {self.min_checkpoints!r}: pass the "
                                      "number of checkpoints (>= 1) recorded before the first forecast")
        object.__setattr__(self, "min_checkpoints", int(self.min_checkpoints))
        b = self.budget
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not 0 < float(b) <= 1:
            raise BandscopeInputError(f"LiveForecastOptions: budget = {b!r} is not a fraction in (0, 1] of the "
                                      "training's CPU time; pass e.g. 0.02")
        object.__setattr__(self, "budget", float(b))
        if not isinstance(self.synchronous, bool):
            raise BandscopeInputError(f"LiveForecastOptions: synchronous = {self.synchronous!r} is not a bool; pass "
                                      "False (forecast on the background worker) or True (on the training thread)")
        if not _whole(self.nice) or int(self.nice) < 0:
            raise BandscopeInputError(f"LiveForecastOptions: nice = {self.nice!r}: pass an integer >= 0 added to the "
                                      "worker thread's nice value (0: unchanged)")
        object.__setattr__(self, "nice", int(self.nice))
        if self.options is not None:
            from ..keysearch.forecasting import ForecastOptions

            if not isinstance(self.options, ForecastOptions):
                raise BandscopeInputError(f"LiveForecastOptions: options = {self.options!r} is not a ForecastOptions; "
                                          "pass bandscope.keysearch.forecasting.ForecastOptions(...) (or None)")


#: every legacy ``Monitor`` keyword of the options objects: keyword -> (options class, field). The one
#: table the Monitor, the callbacks and :func:`live_forecast_options` convert the keywords by, and the
#: keywords' defaults come from (:func:`legacy_default`: the field's default)
LEGACY_KEYWORDS: Mapping[str, tuple[type, str]] = MappingProxyType({
    "name": (RunIdentity, "name"), "arch": (RunIdentity, "arch"), "seed": (RunIdentity, "seed"),
    "source": (RunIdentity, "source"), "extra_attrs": (RunIdentity, "extra_attrs"),
    "probe_batch_size": (ProbeOptions, "batch_size"), "probe_autocast": (ProbeOptions, "autocast"),
    "band_dtype": (ProbeOptions, "dtype"), "probe_output": (ProbeOptions, "output"),
    "tensorboard": (SinkOptions, "tensorboard"), "progress": (SinkOptions, "progress"), "log": (SinkOptions, "log"),
    "metrics": (SinkOptions, "metrics"), "tensorboard_images": (SinkOptions, "tensorboard_images"),
    "forecast_min_checkpoints": (LiveForecastOptions, "min_checkpoints"),
    "forecast_budget": (LiveForecastOptions, "budget"),
    "forecast_background": (LiveForecastOptions, "synchronous"),
})

#: legacy keywords that are the negation of their field (``forecast_background = not synchronous``)
NEGATED_KEYWORDS = frozenset({"forecast_background"})


def legacy_default(keyword: str) -> object:
    """The default of a legacy ``Monitor`` keyword: its field's default (negated for
    :data:`NEGATED_KEYWORDS`; None for a field built by a default factory).

    Examples
    --------
    >>> legacy_default("probe_batch_size"), legacy_default("forecast_background"), legacy_default("extra_attrs")
    (256, True, None)
    """
    cls, name = LEGACY_KEYWORDS[keyword]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = None if f.default is dataclasses.MISSING else f.default
    return (not default) if keyword in NEGATED_KEYWORDS else default


def _at_default(value: object, default: object) -> bool:
    """A keyword left at its default: the default itself, or the same number or text of the same type
    (``0.02``, but not ``True`` for ``1``)."""
    return value is default or (isinstance(value, (str, bool, int, float)) and type(value) is type(default)
                                and value == default)


def _is_legacy_default(keyword: str, value: object) -> bool:
    """A legacy keyword left at its default (:func:`_at_default`)."""
    return _at_default(value, legacy_default(keyword))


def _legacy_fields(cls: type, keywords: Mapping[str, object]) -> dict[str, object]:
    """``cls``'s fields set by the legacy ``keywords`` away from their defaults, under the fields' names."""
    out: dict[str, object] = {}
    for k, v in keywords.items():
        owner, name = LEGACY_KEYWORDS[k]
        if owner is cls and not _is_legacy_default(k, v):
            out[name] = (not v) if k in NEGATED_KEYWORDS else v
    return out


#: the legacy ``Monitor`` keywords of :class:`LiveForecastOptions` and their defaults (from :data:`LEGACY_KEYWORDS`)
FORECAST_KEYWORDS: Mapping[str, object] = MappingProxyType(
    {k: legacy_default(k) for k, (cls, _) in LEGACY_KEYWORDS.items() if cls is LiveForecastOptions})


def _live_forecast(forecast: object, where: str, legacy: Mapping[str, object]) -> LiveForecastOptions | None:
    """:func:`live_forecast_options` with the legacy keywords given (those absent: not given) as a mapping."""
    if forecast is None or forecast is False:
        return None
    background = legacy.get("forecast_background", True)
    if not isinstance(background, bool):
        raise BandscopeInputError(f"{where}: forecast_background = {background!r} is not a bool; pass "
                                  "True (the background worker) or False (the training thread)")
    given = _legacy_fields(LiveForecastOptions, {k: v for k, v in legacy.items() if k in FORECAST_KEYWORDS})
    if isinstance(forecast, LiveForecastOptions):
        return options_from_keywords(LiveForecastOptions, forecast, where, given)
    if forecast is True:
        return options_from_keywords(LiveForecastOptions, None, where, given)
    from ..keysearch.forecasting import ForecastOptions

    if isinstance(forecast, ForecastOptions):
        return dataclasses.replace(options_from_keywords(LiveForecastOptions, None, where, given), options=forecast)
    raise BandscopeInputError(f"{where}: forecast = {forecast!r}: pass True/False, a "
                              "bandscope.torch.LiveForecastOptions(...) or a "
                              "bandscope.keysearch.forecasting.ForecastOptions(...)")


def live_forecast_options(forecast: object, where: str, *, forecast_min_checkpoints: int | None = None,
                          forecast_budget: float | None = None,
                          forecast_background: bool | None = None) -> LiveForecastOptions | None:
    """The one place where ``Monitor(forecast=...)`` and its legacy keywords become options.

    Parameters
    ----------
    forecast : bool, LiveForecastOptions or ForecastOptions
        False / None: no forecasts (the keywords are then ignored, as before). True: forecasts
        with the keywords' settings. A :class:`LiveForecastOptions`: exactly these (a keyword
        away from its default beside it is refused). A core
        :class:`~bandscope.keysearch.forecasting.ForecastOptions`: forecasts with these method
        options and the keywords' settings.
    where : str
        The call, named in errors.
    forecast_min_checkpoints, forecast_budget, forecast_background
        The legacy keywords: ``min_checkpoints``, ``budget`` and ``not synchronous``; None (or the
        default of :data:`FORECAST_KEYWORDS`, which :class:`LiveForecastOptions`' fields define):
        not given.

    Returns
    -------
    LiveForecastOptions or None
        None when forecasting is off.

    Examples
    --------
    >>> live_forecast_options(True, "Monitor", forecast_background=False).synchronous
    True
    >>> live_forecast_options(False, "Monitor") is None
    True
    """
    legacy = {"forecast_min_checkpoints": forecast_min_checkpoints, "forecast_budget": forecast_budget,
              "forecast_background": forecast_background}
    return _live_forecast(forecast, where, {k: v for k, v in legacy.items() if v is not None})


def callback_forecast_options(forecast: object, monitor_options: dict[str, Any],
                              where: str) -> LiveForecastOptions | None:
    """A framework callback's forecast options: its ``forecast=`` argument with the legacy keywords
    taken out of ``monitor_options`` (removed from it), by :func:`live_forecast_options`.

    Deprecated: the callbacks build their Monitor's options once with :func:`monitor_options`
    (``callback.monitor_options.forecast``).

    Examples
    --------
    >>> import warnings
    >>> opts = {"forecast_budget": 0.1, "schedule": [5]}
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     live = callback_forecast_options(True, opts, "BandscopeCallback")
    >>> live.budget, opts
    (0.1, {'schedule': [5]})
    """
    warnings.warn("bandscope.torch.options.callback_forecast_options is deprecated: the callbacks build their "
                  "Monitor's options with bandscope.torch.options.monitor_options", DeprecationWarning, stacklevel=2)
    legacy = {k: monitor_options.pop(k) for k in FORECAST_KEYWORDS if k in monitor_options}
    return _live_forecast(forecast, where, legacy)


def callback_monitor_options(options: Mapping[str, object], *, source: str, log: Callable[[dict, int], None],
                             probe_output: Callable | None = None) -> dict[str, object]:
    """The :class:`~bandscope.torch.Monitor` keywords of a framework callback: the user's ``options``
    with the callback's own ``source``, metrics receiver ``log`` and (HuggingFace) ``probe_output``,
    set in the typed objects when the user gave those (``identity=``, ``sinks=``, ``probe=``) and as
    keywords otherwise, so the two spellings work alike.

    A user's own ``source`` / ``probe_output`` wins over the callback's default; the user's
    ``sinks.log`` is refused (the callback's own ``log=`` receives the metrics besides the
    framework's loggers).

    Parameters
    ----------
    options : mapping of str to object
        The keywords the user gave the callback.
    source : str
        The callback's ``RunIdentity.source`` default.
    log : callable(metrics, step)
        The callback's metrics receiver (it forwards to the framework's loggers).
    probe_output : callable, optional
        The callback's default ``ProbeOptions.output``.

    Returns
    -------
    dict
        Keywords for ``Monitor``.

    Deprecated: the callbacks hand their Monitor one :class:`MonitorOptions`, with these defaults
    set by :func:`callback_defaults`.
    """
    warnings.warn("bandscope.torch.options.callback_monitor_options is deprecated: the callbacks hand their Monitor "
                  "one MonitorOptions (bandscope.torch.options.monitor_options, callback_defaults)",
                  DeprecationWarning, stacklevel=2)
    opts = dict(options)
    identity = opts.get("identity")
    if isinstance(identity, RunIdentity):
        if identity.source == RunIdentity.source:
            opts["identity"] = dataclasses.replace(identity, source=source)
    else:
        opts.setdefault("source", source)
    sinks = opts.get("sinks")
    if isinstance(sinks, SinkOptions):
        if sinks.log is not None:
            raise BandscopeInputError("BandscopeCallback: sinks=SinkOptions(log=...) would replace the callback's "
                                      "own logging; pass the function as BandscopeCallback(log=...)")
        opts["sinks"] = dataclasses.replace(sinks, log=log)
    else:
        opts["log"] = log
    if probe_output is not None:
        probe = opts.get("probe")
        if isinstance(probe, ProbeOptions):
            if probe.output is None:
                opts["probe"] = dataclasses.replace(probe, output=probe_output)
        else:
            opts.setdefault("probe_output", probe_output)
    return opts


class MonitorKeywords(TypedDict, total=False):
    """The :class:`~bandscope.torch.Monitor` keywords a framework callback passes on (``**monitor_options``),
    typed: each has the type of the Monitor's parameter of the same name (``docs/torch.md``, "What the
    Monitor does"). The callbacks' own ``log``, ``forecast`` and the training loop's ``rank`` and
    ``start_step`` are not among them."""

    schedule: Iterable[int] | Callable[[int], bool] | None
    total_steps: int | None
    n_points: int
    steps_per_epoch: float | None
    identity: RunIdentity | None
    probe: ProbeOptions | None
    sinks: SinkOptions | None
    name: str | None
    arch: str
    seed: int
    source: str
    extra_attrs: Mapping[str, object] | None
    lnp: LNPHook | Callable[[Any, Any], Any] | None
    lnp_batch: object
    lnp_options: LNPOptions | Mapping[str, object] | None
    tensorboard: ScalarWriter | str | os.PathLike[str] | None
    progress: ProgressBar | None
    metrics: str
    tensorboard_images: int
    forecast_min_checkpoints: int
    forecast_budget: float
    forecast_background: bool
    probe_batch_size: int
    probe_autocast: torch.dtype | None
    probe_output: Callable[[Any], torch.Tensor] | None
    band_dtype: torch.dtype | None
    tracker_mode: str
    process_group: object
    trainable_only: bool
    resume: bool
    overwrite: bool
    state: dict[str, Any] | None
    heldout_batch: object
    heldout_loss_fn: Callable[[Any, Any], Any] | None


@dataclass(frozen=True)
class MonitorOptions:
    """Everything a :class:`~bandscope.torch.Monitor` is told besides its model, panel and path and the
    training loop's position (``rank``, ``start_step``): built once from the Monitor's keywords by
    :func:`monitor_options` and kept as ``monitor.options``; the callbacks build theirs when they are
    constructed and hand it to each Monitor (``Monitor(model, panel, path, options=...)``).

    Each field is the Monitor keyword of the same name (``docs/torch.md``); the legacy keywords of
    :data:`LEGACY_KEYWORDS` live in ``identity``, ``probe``, ``sinks`` and ``forecast``.

    Parameters
    ----------
    schedule : iterable of int, callable(step) -> bool, or None
        Checkpoint steps (an iterable is kept as a tuple, so each run of a callback sees all of it).
    total_steps, n_points, steps_per_epoch
        The default schedule's run length and number of points; ``epoch = step / steps_per_epoch``.
    identity, probe, sinks : RunIdentity, ProbeOptions, SinkOptions
        The run file's attributes, the band probe's and the sinks' options.
    forecast : LiveForecastOptions or None
        Live forecasts (None: off).
    lnp, lnp_batch, lnp_options
        LNP: a hook or loss function, batch A, and the hook's options (``LNPOptions`` or the dict of
        hook keywords; read by the Monitor).
    heldout_batch, heldout_loss_fn
        The held-out batch and its loss.
    tracker_mode, process_group, trainable_only
        :class:`~bandscope.torch.ParamTimeTracker`'s options.
    resume, overwrite, state
        Continue or replace the run in the path; a :meth:`Monitor.state_dict` to resume from.

    Examples
    --------
    >>> MonitorOptions(total_steps=100, schedule=range(0, 9, 4)).schedule
    (0, 4, 8)
    >>> MonitorOptions(identity="ae")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bandscope.errors.BandscopeInputError: MonitorOptions: identity = 'ae' is not a RunIdentity; pass ...
    """

    schedule: Iterable[int] | Callable[[int], bool] | None = None
    total_steps: int | None = None
    n_points: int = 53
    steps_per_epoch: float | None = None
    identity: RunIdentity = field(default_factory=RunIdentity)
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    sinks: SinkOptions = field(default_factory=SinkOptions)
    forecast: LiveForecastOptions | None = None
    lnp: LNPHook | Callable[[Any, Any], Any] | None = None
    lnp_batch: object = None
    lnp_options: LNPOptions | Mapping[str, object] | None = None
    heldout_batch: object = None
    heldout_loss_fn: Callable[[Any, Any], Any] | None = None
    tracker_mode: str = "auto"
    process_group: object = None
    trainable_only: bool = True
    resume: bool = False
    overwrite: bool = False
    state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, cls in (("identity", RunIdentity), ("probe", ProbeOptions), ("sinks", SinkOptions),
                          ("forecast", LiveForecastOptions)):
            v = getattr(self, name)
            if not isinstance(v, cls) and not (name == "forecast" and v is None):
                raise BandscopeInputError(f"MonitorOptions: {name} = {v!r} is not a {cls.__name__}; pass "
                                          f"bandscope.torch.{cls.__name__}(...)" + (" or None" if name == "forecast"
                                                                                    else ""))
        if self.schedule is not None and not callable(self.schedule):
            object.__setattr__(self, "schedule", tuple(self.schedule))


def _refuse_beside_options(where: str, changed: Iterable[str]) -> None:
    names = sorted(changed)
    if names:
        raise BandscopeInputError(f"{where}: the MonitorOptions and the keyword(s) {names} both set options; put "
                                  "them in the MonitorOptions (dataclasses.replace(options, ...))")


def monitor_options(where: str, keywords: MonitorKeywords, *, options: MonitorOptions | None = None,
                    forecast: bool | LiveForecastOptions | ForecastOptions | None = False,
                    log: Callable[[dict, int], None] | None = None) -> MonitorOptions:
    """The one place where the :class:`~bandscope.torch.Monitor`'s keywords become a :class:`MonitorOptions`
    (``docs/torch.md``, "Options"): the legacy keywords of :data:`LEGACY_KEYWORDS` go into their
    objects (:func:`~bandscope.lnp.options.options_from_keywords`' rule: a keyword at its default
    counts as not given; an object and a keyword of its fields together are refused), ``forecast``
    through :func:`live_forecast_options`, the rest to the field of their name.

    Parameters
    ----------
    where : str
        The call, named in errors (``"Monitor"``, ``"lightning.BandscopeCallback"``).
    keywords : MonitorKeywords
        The keywords given (a keyword absent or at its default: not given).
    options : MonitorOptions, optional
        Options built before (a callback's): returned as they are; any keyword away from its
        default beside them is refused.
    forecast : bool, LiveForecastOptions, ForecastOptions or None
        The Monitor's ``forecast=``.
    log : callable(metrics, step), optional
        The Monitor's ``log=`` (``SinkOptions.log``).

    Returns
    -------
    MonitorOptions

    Examples
    --------
    >>> o = monitor_options("Monitor", {"name": "ae-3", "probe_batch_size": 64, "schedule": [0, 5]})
    >>> o.identity.name, o.probe.batch_size, o.schedule, o.forecast
    ('ae-3', 64, (0, 5), None)
    """
    given: dict[str, object] = dict(keywords)
    if log is not None:
        given["log"] = log
    unknown = sorted(set(given) - set(LEGACY_KEYWORDS) - {f.name for f in dataclasses.fields(MonitorOptions)})
    if unknown:
        raise BandscopeInputError(f"{where}: unknown Monitor keyword(s) {unknown}; see bandscope.torch.Monitor "
                                  "(docs/torch.md)")
    legacy = {k: v for k, v in given.items() if k in LEGACY_KEYWORDS}
    top = {k: v for k, v in given.items() if k not in LEGACY_KEYWORDS}
    if options is not None:
        if not isinstance(options, MonitorOptions):
            raise BandscopeInputError(f"{where}: options = {options!r} is not a MonitorOptions; pass "
                                      "bandscope.torch.options.MonitorOptions(...) (or None)")
        defaults = MonitorOptions()
        changed = [k for k, v in legacy.items() if not _is_legacy_default(k, v)]
        changed += [k for k, v in top.items() if v is not None and not _at_default(v, getattr(defaults, k))]
        if forecast is not None and forecast is not False:
            changed.append("forecast")
        _refuse_beside_options(where, changed)
        return options
    typed = {name: options_from_keywords(cls, top.pop(name, None), where, _legacy_fields(cls, legacy))
             for name, cls in (("identity", RunIdentity), ("probe", ProbeOptions), ("sinks", SinkOptions))}
    live = _live_forecast(forecast, where, {k: v for k, v in legacy.items() if k in FORECAST_KEYWORDS})
    return options_from_keywords(MonitorOptions, None, where, {**top, **typed, "forecast": live})


def callback_defaults(options: MonitorOptions, *, where: str, source: str, log: Callable[[dict, int], None],
                      probe_output: Callable[[Any], torch.Tensor] | None = None) -> MonitorOptions:
    """A framework callback's :class:`MonitorOptions`: the user's with the callback's ``source``,
    metrics receiver ``log`` and (HuggingFace) ``probe_output``.

    A user's own ``source`` / ``probe_output`` wins over the callback's; the user's ``sinks.log``
    is refused (the callback's own ``log=`` receives the metrics besides the framework's loggers).

    Parameters
    ----------
    options : MonitorOptions
        The user's (:func:`monitor_options` of the callback's keywords).
    where : str
        The callback, named in errors.
    source : str
        The callback's ``RunIdentity.source`` default.
    log : callable(metrics, step)
        The callback's metrics receiver (it forwards to the framework's loggers).
    probe_output : callable, optional
        The callback's default ``ProbeOptions.output``.

    Returns
    -------
    MonitorOptions

    Examples
    --------
    >>> o = callback_defaults(MonitorOptions(), where="cb", source="cb", log=lambda m, s: None, probe_output=len)
    >>> o.identity.source, o.probe.output
    ('cb', <built-in function len>)
    """
    if options.sinks.log is not None:
        raise BandscopeInputError(f"{where}: sinks=SinkOptions(log=...) would replace the callback's own logging; "
                                  "pass the function as BandscopeCallback(log=...)")
    identity = options.identity
    if identity.source == RunIdentity.source:
        identity = dataclasses.replace(identity, source=source)
    probe = options.probe
    if probe_output is not None and probe.output is None:
        probe = dataclasses.replace(probe, output=probe_output)
    sinks = dataclasses.replace(options.sinks, log=log)
    return dataclasses.replace(options, identity=identity, probe=probe, sinks=sinks)
