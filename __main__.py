"""``python -m bayesdl``: the command line."""

import sys

from bayesdl.cli import main

sys.exit(main())
