"""``python -m mrirecon``: the same command line as the ``mrirecon`` console script."""
from .cli import main

raise SystemExit(main())
