"""`python -m cli ...` is `strangler ...`."""

from cli import main

raise SystemExit(main())
