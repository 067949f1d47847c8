"""`python3 -m mcastd`."""

import sys

from mcastd.cli import main

sys.exit(main())
