"""Cut the README's excerpt out of `bandscope reproduce`, so it is pasted, never hand-edited.

Usage (from the repository root)::

    bandscope reproduce 2>/dev/null | python tools/readme_excerpt.py [PREFIX ...]

Prints the first line of the report and each section whose heading starts with one of the
PREFIXes (default: the verdicts, the per-band fits, the band ordering, the full-loss fit and the
saturation check — the paper's three results and the check behind them), in the report's order,
each with its heading, its rule line, its table and its legend. A section is a heading line
followed by a line of ``=`` or ``-``; it ends where the next one starts. Exits with 1 if a PREFIX
matches no section.
"""

import sys

DEFAULT = ("Verdicts", "Per-band Weibull", "Band ordering:", "Full-loss", "Saturation")


def sections(lines):
    """Split report lines into (heading, body lines) pairs; body keeps the rule line."""
    starts = [i for i in range(len(lines) - 1)
              if lines[i].strip() and set(lines[i + 1].strip()) in ({"-"}, {"="})]
    out = []
    for j, i in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else len(lines)
        body = lines[i + 1:end]
        while body and not body[-1].strip():
            body.pop()
        out.append((lines[i], body))
    return out


def main(argv=None):
    prefixes = tuple(argv if argv else DEFAULT)
    lines = sys.stdin.read().splitlines()
    if not lines:
        print("no input: pipe `bandscope reproduce` into this script", file=sys.stderr)
        return 1
    chosen = [(h, b) for h, b in sections(lines) if h.startswith(prefixes)]
    missing = [p for p in prefixes if not any(h.startswith(p) for h, _ in chosen)]
    if missing:
        print(f"no section starts with {', '.join(missing)}", file=sys.stderr)
        return 1
    blocks = [lines[0]] + ["\n".join([h] + b) for h, b in chosen]
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
