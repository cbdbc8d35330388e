"""Build a redistributable byte corpus from the permissively licensed packages of a Python environment.

    python tools/lm_corpus.py --out reference_runs/lm-scaling-single-pass/corpus [--site DIR]

Walks the installed distributions of ``--site`` (default: the running interpreter's site-packages),
keeps those whose licence metadata is MIT, BSD, Apache-2.0 or PSF only (rule below), and takes
their ``.py``, ``.md``, ``.rst`` and ``.txt`` files listed in the distribution's RECORD (not the
``*.dist-info`` folder, not licence/notice/author files, not files above 1 MB, only valid UTF-8).
Files with identical content are kept once (the first in the order below). The order is
deterministic: distributions by lower-cased name, files by path. Each file goes to the held-out
split when the first 8 hex digits of its sha256, read as an integer, fall below
``--heldout-fraction`` × 16^8 (a split by file, independent of the order and of the other files).

Licence rule, per distribution, the first that applies:
1. ``License-Expression`` (SPDX): accepted if some ``OR`` alternative consists only of identifiers
   in ``SPDX_OK`` (``AND`` needs all of them; any ``WITH`` exception rejects that alternative);
2. ``License ::`` classifiers: accepted if there is at least one and all are in ``CLASSIFIER_OK``;
3. the ``License`` field, if at most 80 characters: accepted if it names MIT, BSD, Apache or the
   PSF and neither another licence family (GPL, MPL, EPL, CDDL, proprietary) nor ``AND``/``WITH``.
Anything else (MPL, ISC, GPL, long licence texts without classifiers, mixed expressions such as
torch's or numpy's) is left out. The project itself (``bandscope``) is left out.

Outputs in ``--out``: ``train.bin`` and ``heldout.bin`` (the files' bytes, each file followed by
two newlines), ``manifest.json.gz`` (one row per kept file: distribution, version, licence and the
rule that accepted it, path, sha256, bytes, split) and ``summary.json`` (totals by split, licence
and distribution, the sha256 of both ``.bin`` files, the rejected distributions with the reason).
``tools/lm_scaling.py --corpus DIR`` checks the ``.bin`` files against ``summary.json``.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata as md
import json
import re
import sys
import sysconfig
from pathlib import Path

SUFFIXES = (".py", ".md", ".rst", ".txt")
SPDX_OK = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "PSF-2.0", "Python-2.0"}
CLASSIFIER_OK = {
    "License :: OSI Approved :: MIT License",
    "License :: OSI Approved :: BSD License",
    "License :: OSI Approved :: Apache Software License",
    "License :: OSI Approved :: Python Software Foundation License",
}
NOT_OK_FIELD = re.compile(r"GPL|MPL|EPL|CDDL|\bAND\b|\bWITH\b|proprietar|commercial", re.IGNORECASE)
SKIP_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS|CONTRIBUTORS)", re.IGNORECASE)
MAX_FILE_BYTES = 1_000_000
SEPARATOR = b"\n\n"


def licence_of(dist: md.Distribution) -> tuple[str | None, str]:
    """(licence, rule) if the distribution is accepted by the module's licence rule, else (None, reason)."""
    meta = dist.metadata
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        for alt in re.split(r"\s+OR\s+", expr.strip("()")):
            if " WITH " in alt:
                continue
            ids = [t.strip("() ") for t in re.split(r"\s+AND\s+", alt)]
            if ids and all(i in SPDX_OK for i in ids):
                return " AND ".join(ids), "License-Expression"
        return None, f"License-Expression {expr!r}"
    classifiers = [c for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    if classifiers:
        if all(c in CLASSIFIER_OK for c in classifiers):
            return "; ".join(c.rsplit(" :: ", 1)[-1] for c in classifiers), "classifier"
        return None, f"classifiers {classifiers}"
    field = (meta.get("License") or "").strip()
    if field and len(field) <= 80 and not NOT_OK_FIELD.search(field):
        m = re.search(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation)\b", field, re.IGNORECASE)
        if m:
            return field, "License field"
    return None, f"License field {field[:80]!r}"


def build(site: Path, out: Path, heldout_fraction: float) -> dict:
    """Collect, filter, dedupe and split the files; write the corpus and its manifest to ``out``."""
    dists = {}
    for d in md.distributions(path=[str(site)]):
        name = d.metadata["Name"]
        if name and name.lower() not in dists:
            dists[name.lower()] = d
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    rows, rejected = [], {}
    threshold = int(heldout_fraction * 16**8)
    streams = {"train": (out / "train.bin").open("wb"), "heldout": (out / "heldout.bin").open("wb")}
    digests = {k: hashlib.sha256() for k in streams}
    try:
        for key in sorted(dists):
            d = dists[key]
            if key == "bandscope":
                rejected[d.metadata["Name"]] = "the project itself"
                continue
            lic, rule = licence_of(d)
            if lic is None:
                rejected[d.metadata["Name"]] = rule
                continue
            for f in sorted(d.files or [], key=str):
                parts = Path(str(f)).parts
                if (not str(f).endswith(SUFFIXES) or any(p.endswith(".dist-info") for p in parts)
                        or ".." in parts or SKIP_NAME.match(parts[-1])):
                    continue
                path = site / f
                try:
                    if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                        continue
                    data = path.read_bytes()
                    data.decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if not data.strip():
                    continue
                sha = hashlib.sha256(data).hexdigest()
                if sha in seen:
                    continue
                seen.add(sha)
                split = "heldout" if int(sha[:8], 16) < threshold else "train"
                streams[split].write(data + SEPARATOR)
                digests[split].update(data + SEPARATOR)
                rows.append({"distribution": d.metadata["Name"], "version": d.version, "licence": lic,
                             "licence_rule": rule, "path": str(f), "sha256": sha, "bytes": len(data),
                             "split": split})
    finally:
        for s in streams.values():
            s.close()
    with gzip.open(out / "manifest.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(rows, fh, indent=0)
    by = {}
    for r in rows:
        for k in ("split", "licence", "distribution"):
            by.setdefault(k, {}).setdefault(r[k], 0)
            by[k][r[k]] += r["bytes"]
    summary = {
        "site": str(site), "python": sys.version.split()[0], "suffixes": list(SUFFIXES),
        "heldout_fraction": heldout_fraction, "max_file_bytes": MAX_FILE_BYTES,
        "files": len(rows), "files_by_split": {s: sum(r["split"] == s for r in rows) for s in streams},
        "bytes": {s: (out / f"{s}.bin").stat().st_size for s in streams},
        "sha256": {f"{s}.bin": digests[s].hexdigest() for s in streams},
        "bytes_by_licence": dict(sorted(by.get("licence", {}).items(), key=lambda kv: -kv[1])),
        "bytes_by_distribution": dict(sorted(by.get("distribution", {}).items(), key=lambda kv: -kv[1])),
        "rejected": dict(sorted(rejected.items())),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for train.bin, heldout.bin, manifest.json.gz, summary.json")
    ap.add_argument("--site", default=sysconfig.get_paths()["purelib"], help="site-packages folder to read")
    ap.add_argument("--heldout-fraction", type=float, default=0.05)
    args = ap.parse_args(argv)
    if not 0 < args.heldout_fraction < 1:
        ap.error(f"--heldout-fraction must lie in (0, 1), got {args.heldout_fraction}")
    s = build(Path(args.site), Path(args.out), args.heldout_fraction)
    print(f"{s['files']} files; train {s['bytes']['train']:,} bytes, held out {s['bytes']['heldout']:,} bytes; "
          f"{len(s['bytes_by_distribution'])} distributions kept, {len(s['rejected'])} left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
