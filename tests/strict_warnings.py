"""Warnings from bandscope's own calls, made errors by ``BANDSCOPE_STRICT_WARNINGS=1``.

The minimum-versions lane (``make test-min``) sets it: a DeprecationWarning,
PendingDeprecationWarning or FutureWarning raised in a bandscope module -- a call of ours that a
dependency at its floor (or a newer one) deprecates -- fails the test that triggered it.
``tests/conftest.py`` adds these as ini-style ``filterwarnings`` lines, whose module field is a
regular expression matched at the start of the module name (``-W`` on the command line would
match the module ``bandscope`` alone, not ``bandscope.io.runfiles``).
"""
ENV = "BANDSCOPE_STRICT_WARNINGS"
FILTERS = [f"error::{w}:bandscope" for w in ("DeprecationWarning", "PendingDeprecationWarning", "FutureWarning")]
