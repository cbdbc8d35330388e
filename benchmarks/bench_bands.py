"""Benchmark: Haar band losses of a (256, 3, 64, 64) panel, fast kernel vs baselines.

Baselines measured in the same run:
- ``pywt``: ``pywt.wavedec2(e, 'haar', level=J, axes=(-2, -1))`` then squared sums per band
  (the oracle route, float64);
- ``floor``: one elementwise pass ``np.square(x - recon).sum()`` on the float32 panel (the
  memory floor: any band-loss route has to read both arrays at least once).

Timing is best-of-N with the candidates interleaved round by round, so a burst of load from
other processes hits all of them alike. Targets (brief): pywt/fast >= 6, fast/floor <= 3.

Run: ``python benchmarks/bench_bands.py [--rounds 15]``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bandscope.transforms.bands import _band_energies, _band_energies_pywt, band_losses


def _interleaved_best(fns: dict, rounds: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main(rounds: int = 15, shape=(256, 3, 64, 64), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.random(shape, dtype=np.float32)
    recon = np.clip(x + 0.05 * rng.standard_normal(shape, dtype=np.float32), 0, 1)
    x16, r16 = x.astype(np.float16), recon.astype(np.float16)

    # correctness first: the timed routes must agree with the oracle
    ref = _band_energies_pywt(x, recon)
    tot = ref.sum(axis=-1, keepdims=True)
    for dt in (np.float32, np.float64):
        err = np.abs(_band_energies(x, recon, dtype=dt) - ref) / tot
        assert err.max() < (1e-5 if dt == np.float32 else 1e-12), (dt, err.max())

    fns = {
        "floor": lambda: np.square(x - recon).sum(),
        "fast_f32": lambda: _band_energies(x, recon, dtype=np.float32),
        "fast_f64": lambda: _band_energies(x, recon, dtype=np.float64),
        "public_default": lambda: band_losses(x, recon),
        "public_f64": lambda: band_losses(x, recon, dtype=np.float64),
        "fast_f32_in_f16": lambda: _band_energies(x16, r16, dtype=np.float32),
        "fast_f64_in_f16": lambda: _band_energies(x16, r16, dtype=np.float64),
        "floor_f16": lambda: np.square(np.subtract(x16, r16, dtype=np.float32)).sum(),
    }
    try:  # the torch twin on the same panel (CPU), for the recorder's probe cost
        import torch

        from bandscope.torch.haar import haar_band_losses

        torch.set_num_threads(1)  # like numpy here: one thread (2 shared cores)
        tx, tr = torch.from_numpy(x), torch.from_numpy(recon)
        torch_haar_warm = haar_band_losses(tx, tr)  # noqa: F841  first call allocates

        def torch_haar():
            with torch.no_grad():
                return haar_band_losses(tx, tr, per_image=True)

        fns["torch_f32"] = torch_haar
    except ImportError:
        pass
    t = _interleaved_best(fns, rounds)
    t["pywt"] = _interleaved_best({"pywt": lambda: _band_energies_pywt(x, recon)}, max(3, rounds // 3))[
        "pywt"
    ]
    res = {f"time_ms_{k}": v * 1e3 for k, v in t.items()}
    for k in ("fast_f32", "fast_f64", "public_default", "public_f64"):
        res[f"pywt_over_{k}"] = t["pywt"] / t[k]
        res[f"{k}_over_floor"] = t[k] / t["floor"]
    if "torch_f32" in t:
        res["torch_f32_over_floor"] = t["torch_f32"] / t["floor"]
    for k in ("fast_f32_in_f16", "fast_f64_in_f16"):
        res[f"{k}_over_floor"] = t[k] / t["floor"]
        res[f"{k}_over_floor_f16"] = t[k] / t["floor_f16"]
    print(f"panel {shape} float32 (float16 rows: same panel stored as float16), best of {rounds}")
    for k, v in res.items():
        print(f"  {k:32s} {v:9.2f}")
    print("  (shared machine: absolute times are noisy; ratios are measured in the same run)")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    main(ap.parse_args().rounds)
