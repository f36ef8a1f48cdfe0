"""``python -m export``: the same as the ``tardis-export`` command."""

import sys

from export.cli import main

sys.exit(main())
