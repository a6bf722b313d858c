"""``python -m fastce.cli ...`` runs the command line (the same as ``fastce ...`` and ``python -m fastce ...``)."""
from . import main

raise SystemExit(main())
