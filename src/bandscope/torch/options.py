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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from ..errors import BandscopeInputError
from ..lnp.options import LNPOptions, options_from_keywords

if TYPE_CHECKING:
    from ..keysearch.forecasting import ForecastOptions

__all__ = ["ProbeOptions", "RunIdentity", "SinkOptions", "LiveForecastOptions", "LNPOptions", "options_from_keywords",
           "live_forecast_options", "callback_forecast_options", "METRICS_MODES", "callback_monitor_options",
           "FORECAST_KEYWORDS"]

#: what :class:`SinkOptions` sends to the loggers (``docs/torch.md``, "Metrics")
METRICS_MODES = ("compact", "all")


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
    output: Callable | None = None

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

    tensorboard: object = None
    progress: object = None
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


#: the legacy ``Monitor`` keywords of :class:`LiveForecastOptions` and their defaults
FORECAST_KEYWORDS = {"forecast_min_checkpoints": 8, "forecast_budget": 0.02, "forecast_background": True}


def live_forecast_options(forecast: object, where: str, *, forecast_min_checkpoints: int = 8,
                          forecast_budget: float = 0.02,
                          forecast_background: bool = True) -> LiveForecastOptions | None:
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
        The legacy keywords: ``min_checkpoints``, ``budget`` and ``not synchronous``.

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
    if forecast is None or forecast is False:
        return None
    if not isinstance(forecast_background, bool):
        raise BandscopeInputError(f"{where}: forecast_background = {forecast_background!r} is not a bool; pass "
                                  "True (the background worker) or False (the training thread)")
    legacy = {"forecast_min_checkpoints": forecast_min_checkpoints, "forecast_budget": forecast_budget,
              "forecast_background": forecast_background}
    field_of = {"forecast_min_checkpoints": "min_checkpoints", "forecast_budget": "budget",
                "forecast_background": "synchronous"}
    given = {field_of[k]: (not v if k == "forecast_background" else v) for k, v in legacy.items()
             if not (type(v) is type(FORECAST_KEYWORDS[k]) and v == FORECAST_KEYWORDS[k])}  # a default: not given
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


def callback_forecast_options(forecast: object, monitor_options: dict[str, Any],
                              where: str) -> LiveForecastOptions | None:
    """A framework callback's forecast options: its ``forecast=`` argument with the legacy keywords
    taken out of ``monitor_options`` (removed from it), by :func:`live_forecast_options`, so the
    callback hands its :class:`~bandscope.torch.Monitor` one typed object.

    Examples
    --------
    >>> opts = {"forecast_budget": 0.1, "schedule": [5]}
    >>> callback_forecast_options(True, opts, "BandscopeCallback").budget, opts
    (0.1, {'schedule': [5]})
    """
    d = FORECAST_KEYWORDS
    return live_forecast_options(
        forecast, where,
        forecast_min_checkpoints=monitor_options.pop("forecast_min_checkpoints", d["forecast_min_checkpoints"]),
        forecast_budget=monitor_options.pop("forecast_budget", d["forecast_budget"]),
        forecast_background=monitor_options.pop("forecast_background", d["forecast_background"]))


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
    """
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
