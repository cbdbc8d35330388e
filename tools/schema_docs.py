"""Regenerate every table of variables in docs/ from bandscope.schema (or check them with --check).

    python tools/schema_docs.py            # rewrite the tables in docs/*.md
    python tools/schema_docs.py --check    # exit 1 naming the pages whose tables differ
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bandscope import schema

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the generated tables of ``docs/`` (``schema.update_all_docs``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    changed = schema.update_all_docs(ROOT, check=args.check)
    for path in changed:
        print(f"{path.relative_to(ROOT)}: {'differs from' if args.check else 'rewritten from'} bandscope.schema")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
