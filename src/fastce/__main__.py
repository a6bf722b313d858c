"""`python -m fastce ...` runs the command-line interface (same as the `fastce` command)."""
from .cli import main

raise SystemExit(main())
