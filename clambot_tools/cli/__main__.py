"""`python -m clambot_tools.cli`: the `clambot` command."""

import sys

from . import main

sys.exit(main())
