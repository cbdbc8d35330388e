"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

1. The API reference: one page per public module of ``src/bandscope`` (core) and
   ``src/bandscope/torch`` (adapter), each rendered by mkdocstrings from its numpydoc
   docstrings, plus an index built from the packages' lazy top-level names (``_LAZY``). The
   modules are found by listing the source tree and the names by parsing it (``ast``), so a new
   module appears without editing this file, and nothing here imports bandscope (the core never
   imports torch, and neither does the docs build on its behalf).
2. Optional guide pages: nav entries for pages that other work adds later (``OPTIONAL_PAGES``)
   are dropped while their file does not exist, so ``mkdocs build --strict`` passes with or
   without them. Any other missing page still fails the build. A Markdown page directly under
   ``docs/`` that the nav does not list is appended to the Guide section under its first
   heading, so a page added without a nav entry still appears.
3. ``RstToMarkdown``, a griffe extension (``mkdocs.yml``: mkdocstrings ``extensions``): the
   docstrings are numpydoc with a little reStructuredText inside (``:func:`x``` roles, simple
   ``====`` tables, ``::`` literal blocks, ``.. math::``), which Markdown would print verbatim.
   Roles become links to the rendered object (or inline code when the target is not rendered),
   tables become Markdown tables, literal and math blocks become code blocks. The source is not
   changed.
"""
from __future__ import annotations

import ast
import logging
import re
import textwrap
from pathlib import Path

from griffe import Extension
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.bandscope")

OPTIONAL_PAGES = {"sweeps.md", "forecast.md"}
API_SECTION = "API reference"
GUIDE_SECTION = "Guide"
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGES = {"bandscope": "Core (no torch)", "bandscope.torch": "Torch adapter (bandscope.torch)"}


def _modules(package: str) -> list[str]:
    """Public modules of ``package`` in name order: its ``.py`` files and its sub-packages
    (folders with an ``__init__.py``) with their own modules, except sub-packages that have a
    section of their own in ``PACKAGES``."""
    folder = SRC.joinpath(*package.split("."))
    out = [f"{package}.{p.stem}" for p in folder.glob("*.py") if not p.stem.startswith("_")]
    for sub in folder.iterdir():
        name = f"{package}.{sub.name}"
        if (sub / "__init__.py").exists() and name not in PACKAGES and not sub.name.startswith("_"):
            out += [name] + _modules(name)
    return sorted(out)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _summary(module: str) -> str:
    """First sentence-line of a module docstring, for the index table."""
    parts = module.split(".")
    path = SRC.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = SRC.joinpath(*parts, "__init__.py")
    first = _docstring(path).strip().split("\n\n")[0]
    first = _ROLE.sub(lambda m: f"`{m.group(1).lstrip('~')}`", first)
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


def _nav_files(items) -> set[str]:
    out = set()
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out |= _nav_files(value)
        elif isinstance(value, str):
            out.add(value)
    return out


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip().replace("`", "")
    return path.stem


def on_config(config, **kwargs):
    docs_dir = Path(config["docs_dir"])
    nav = _filter_nav(config["nav"], docs_dir)
    listed = _nav_files(nav)
    extra = [p for p in sorted(docs_dir.glob("*.md")) if p.name not in listed]
    for item in nav:
        if isinstance(item, dict) and GUIDE_SECTION in item:
            for p in extra:
                log.info("page %s is not in the nav of mkdocs.yml: listed under %s", p.name, GUIDE_SECTION)
                item[GUIDE_SECTION].append({_title(p): p.name})
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


# --------------------------------------------------------------------------- docstrings
_ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc|const):`([^`]+)`")
_RULE = re.compile(r"^(\s*)=+(\s+=+)+\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The indented block after line ``start - 1`` (deeper than ``base``): its lines and end."""
    j = start
    while j < len(lines) and not lines[j].strip():
        j += 1
    body = []
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
        body.append(lines[j])
        j += 1
    while body and not body[-1].strip():
        body.pop()
        j -= 1
    if not body:
        return [], start
    return textwrap.dedent("\n".join(body)).split("\n"), j


def _fence(pad: str, body: list[str], lang: str = "text") -> list[str]:
    return [pad + "```" + lang, *(pad + b if b else "" for b in body), pad + "```"]


def _table(lines: list[str], i: int) -> tuple[list[str], int] | None:
    """An RST simple table starting at rule line ``i`` as Markdown rows, and the line after it."""
    rule = lines[i].strip()
    if i + 2 >= len(lines) or lines[i + 2].strip() != rule:
        return None
    end = next((j for j in range(i + 3, len(lines)) if lines[j].strip() == rule), None)
    if end is None:
        return None
    starts = [m.start() for m in re.finditer(r"=+", lines[i])]

    def cells(line):
        return [line[a:b].strip().replace("|", "\\|") for a, b in zip(starts, starts[1:] + [None])]

    rows: list[list[str]] = []
    for line in lines[i + 3:end]:
        if not line.strip():
            continue
        c = cells(line)
        if rows and not c[0]:  # continuation line of the previous row
            rows[-1] = [f"{p} {q}".strip() for p, q in zip(rows[-1], c)]
        else:
            rows.append(c)
    pad = lines[i][:_indent(lines[i])]
    header = cells(lines[i + 1])
    md = [pad + "| " + " | ".join(header) + " |", pad + "|" + "---|" * len(header)]
    md += [pad + "| " + " | ".join(r) + " |" for r in rows]
    return ["", *md, ""], end + 1


def rst_blocks_to_markdown(text: str) -> str:
    """Simple tables, ``::`` literal blocks, ``.. math::`` and doctest blocks outside an Examples
    section (numpydoc renders those as code only inside Examples) of a docstring as Markdown."""
    lines, out, i, section = text.split("\n"), [], 0, ""
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and re.fullmatch(r"\s*-{3,}\s*", lines[i + 1]):
            section = line.strip()
        if (line.lstrip().startswith(">>>") and section not in ("Examples", "Example")
                and (i == 0 or not lines[i - 1].strip())):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += _fence(line[:_indent(line)], textwrap.dedent("\n".join(lines[i:j])).split("\n"), "pycon")
            i = j
            continue
        if _RULE.match(line) and (table := _table(lines, i)):
            out += table[0]
            i = table[1]
            continue
        math = _DIRECTIVE.match(line)
        if math or line.rstrip().endswith("::"):
            pad, base = line[:_indent(line)], _indent(line)
            body, j = _block(lines, i + 1, base)
            if math:
                out += _fence(pad, ([math.group(2)] if math.group(2) else []) + body)
                i = j
                continue
            if body:
                head = line.rstrip()[:-2].rstrip()
                if head:
                    out += [head + ":", ""]
                out += _fence(pad, body)
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(Extension):
    """Griffe extension: the reStructuredText inside the numpydoc docstrings, as Markdown."""

    def on_package(self, *, pkg, **kwargs):
        index = {}

        def walk(obj):
            if obj.is_alias:
                return
            index[obj.path] = obj
            for member in obj.members.values():
                walk(member)

        walk(pkg)
        lazy = {f"{p}.{n}": f"{m}.{n}" for p in PACKAGES for n, m in _lazy_names(p).items()}
        bare = {n: f"{m}.{n}" for p in PACKAGES for n, m in _lazy_names(p).items()}
        pages = {mod for p in PACKAGES for mod in _modules(p)}

        def rendered(obj) -> bool:
            if obj.module.path not in pages:
                return False
            while obj.path != obj.module.path:
                if not obj.is_public or not obj.docstring:
                    return False
                obj = obj.parent
            return True

        def resolve(target: str, scope) -> str | None:
            candidates = [target, lazy.get(target)]
            while scope is not None:
                candidates.append(f"{scope.path}.{target}")
                scope = scope.parent
            candidates.append(bare.get(target))
            for c in candidates:
                if c in index and rendered(index[c]):
                    return c
            return None

        for obj in list(index.values()):
            if not obj.docstring:
                continue

            def role(m, obj=obj):
                target = m.group(1).strip().lstrip("~.").removesuffix("()")
                shown = target.rsplit(".", 1)[-1] if m.group(1).strip().startswith("~") else target
                path = resolve(target, obj if obj.is_module or obj.is_class else obj.parent)
                return f"[`{shown}`][{path}]" if path else f"`{shown}`"

            obj.docstring.value = _ROLE.sub(role, rst_blocks_to_markdown(obj.docstring.value))
