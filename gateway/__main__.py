"""`python -m gateway serve ...` is `strangler gateway serve ...`."""

import sys

from gateway.cli import main

raise SystemExit(main(["gateway", *sys.argv[1:]]))
