"""``python -m tardis_edge.runtime`` = the ``tardis-edge`` command."""

import sys

from tardis_edge.runtime.cli import main

sys.exit(main())
