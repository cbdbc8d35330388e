"""Print (or write into docs/lnp.md) the table of what measure_lnp covers: layer handlers and architecture families.

Run: ``python tools/lnp_coverage_table.py [--write]``.

The layer rows come from the registry (:func:`bandscope.torch.lnp.registered_layer_types`, with
transformers imported so that its optional layer types are registered; types registered by user
code are left out); the architecture rows
from ``tests/lnp_architectures.py``, whose route each row states is checked against an
explicit-Jacobian oracle by ``tests/test_torch_lnp_architectures.py``. ``--write`` replaces the
block between the ``lnp-coverage`` markers of docs/lnp.md; ``tests/test_torch_lnp_coverage_doc.py``
fails when that block differs from this output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- lnp-coverage:start (tools/lnp_coverage_table.py --write) -->", "<!-- lnp-coverage:end -->"


def _batch_dim(h) -> str:
    b = h.batch_dim
    return "any leading dim" if b == "any" else ("per module" if callable(b) else str(b))


def layer_rows() -> list[str]:
    try:
        import transformers.models.llama.modeling_llama  # noqa: F401  (registers optional types)
        import transformers.models.mistral.modeling_mistral  # noqa: F401
        import transformers.models.qwen2.modeling_qwen2  # noqa: F401
        import transformers.pytorch_utils  # noqa: F401
    except ImportError:  # pragma: no cover - transformers absent: torch's own types only
        pass
    from bandscope.torch.lnp.handlers import _REGISTRY, registered_layer_types

    rows = ["| layer type | per-sample rule | fast squared norms | parameters | batch dim |", "|---|---|---|---|---|"]
    built_in = [c for c in registered_layer_types() if c.__module__.startswith(("torch.", "transformers."))]
    for cls in sorted(built_in, key=lambda c: (c.__module__, c.__qualname__)):
        h = _REGISTRY[cls]
        rows.append(f"| `{cls.__module__}.{cls.__qualname__}` | `{h.grads.__name__}` | "
                    f"{'yes' if h.sq_norms is not None else 'no'} | {h.params} | {_batch_dim(h)} |")
    return rows


def architecture_rows() -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from lnp_architectures import ARCHITECTURES

    rows = ["| architecture (tiny random config) | family | `backend=\"auto\"` measures with / refuses | needs |",
            "|---|---|---|---|"]
    for name, a in ARCHITECTURES.items():
        route = a.expect if a.expect in ("hooks", "vmap") else f"refused: `{a.expect}`"
        if not a.run_here:
            route = f"expected {route} (not yet run: {a.needs} absent from the shared environment)"
        rows.append(f"| {name}{' (train mode)' if a.train else ''} | {a.family} | {route} | {a.needs or '-'} |")
    return rows


def block() -> str:
    return "\n".join([START, "", *layer_rows(), "", *architecture_rows(), "", END])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the block in docs/lnp.md")
    args = ap.parse_args(argv)
    text = block()
    if not args.write:
        print(text)
        return
    doc = ROOT / "docs" / "lnp.md"
    s = doc.read_text()
    i, j = s.index(START), s.index(END) + len(END)
    doc.write_text(s[:i] + text + s[j:])


if __name__ == "__main__":
    main()
