"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

1. The API reference: one page per public module of ``src/bandscope`` (core) and
   ``src/bandscope/torch`` (adapter), each rendered by mkdocstrings from its numpydoc
   docstrings, plus an index built from the packages' lazy top-level names (``_LAZY``). The
   modules are found by listing the source tree and the names by parsing it (``ast``), so a new
   module appears without editing this file, and nothing here imports bandscope (the core never
   imports torch, and neither does the docs build on its behalf).
2. Optional guide pages: nav entries for pages that other work adds later (``OPTIONAL_PAGES``)
   are dropped while their file does not exist, so ``mkdocs build --strict`` passes with or
   without them. Any other missing page still fails the build.
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.bandscope")

OPTIONAL_PAGES = {"sweeps.md", "forecast.md"}
API_SECTION = "API reference"
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGES = {"bandscope": "Core (no torch)", "bandscope.torch": "Torch adapter (bandscope.torch)"}


def _modules(package: str) -> list[str]:
    """Public modules of ``package`` (not sub-packages), in file-name order."""
    folder = SRC.joinpath(*package.split("."))
    return [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")]


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _summary(module: str) -> str:
    """First sentence-line of a module docstring, for the index table."""
    parts = module.split(".")
    path = SRC.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = SRC.joinpath(*parts, "__init__.py")
    first = _docstring(path).strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def _lazy_names(package: str) -> dict[str, str]:
    """The ``_LAZY`` dict (name -> module) of a package's ``__init__.py``, read without importing."""
    tree = ast.parse(SRC.joinpath(*package.split("."), "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _page_uri(module: str) -> str:
    return f"api/{module}.md"


def _module_page(module: str) -> str:
    return f"::: {module}\n"


def _index_page() -> str:
    lines = [
        "# API reference",
        "",
        "Rendered from the numpydoc docstrings of the source by "
        "[mkdocstrings](https://mkdocstrings.github.io/) (static analysis: the build does not import "
        "the package). Formulas and paper sections are stated in each docstring; the guide pages "
        "explain the contracts (formats, CLI).",
        "",
        "The core (`bandscope` minus `bandscope.torch`) needs only numpy, scipy, pandas, xarray, "
        "PyWavelets, lmfit and statsmodels and never imports torch. `bandscope.torch` needs the "
        '`torch` extra (`pip install "bandscope[torch]"`).',
        "",
    ]
    for package, title in PACKAGES.items():
        lines += [f"## {title}", ""]
        lazy = _lazy_names(package)
        if lazy:
            lines += [f"Names importable from `{package}` directly:", "", "| name | defined in |", "|---|---|"]
            for name, mod in sorted(lazy.items(), key=lambda kv: kv[0].lower()):
                lines.append(f"| [`{package}.{name}`][{mod}.{name}] | [`{mod}`]({mod}.md) |")
            lines.append("")
        lines += ["| module | what it holds |", "|---|---|"]
        for mod in _modules(package):
            lines.append(f"| [`{mod}`]({mod}.md) | {_summary(mod)} |")
        lines.append("")
    return "\n".join(lines)


def _filter_nav(items, docs_dir: Path):
    out = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                out.append({title: _filter_nav(value, docs_dir)})
                continue
            if isinstance(value, str) and value in OPTIONAL_PAGES and not (docs_dir / value).exists():
                log.info("optional page %s not present: left out of the nav", value)
                continue
        out.append(item)
    return out


def on_config(config, **kwargs):
    docs_dir = Path(config["docs_dir"])
    nav = _filter_nav(config["nav"], docs_dir)
    for i, item in enumerate(nav):
        if isinstance(item, dict) and API_SECTION in item:
            section = [{"Overview": "api/index.md"}]
            for package, title in PACKAGES.items():
                section.append({title: [{mod: _page_uri(mod)} for mod in _modules(package)]})
            nav[i] = {API_SECTION: section}
    config["nav"] = nav
    return config


def on_files(files, config, **kwargs):
    files.append(File.generated(config, "api/index.md", content=_index_page()))
    for package in PACKAGES:
        for mod in _modules(package):
            files.append(File.generated(config, _page_uri(mod), content=_module_page(mod)))
    return files
