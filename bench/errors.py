"""The one error the benchmarks raise.

    BenchError      a target did not start, a load generator failed or its output could not
                    be read, or too many requests failed; the message says which and why.

Foreign errors (OSError from a process, wrk's exit status, a parse miss) are translated into it
where they happen, so the entry point has one thing to catch and print.
"""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not produce a trustworthy figure."""
