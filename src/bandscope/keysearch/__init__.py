"""The key-search analysis: floors and crossings (:mod:`.trajectory`), Weibull and exponential fits
(:mod:`.fitting`), band ordering (:mod:`.ordering`), the whole analysis (:mod:`.analysis`), live
forecasts (:mod:`.forecasting`), sweeps on dask (:mod:`.sweep`) and runs with a known truth
(:mod:`.synthetic`).
"""
