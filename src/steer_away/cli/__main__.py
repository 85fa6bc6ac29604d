"""`python -m steer_away.cli`: the same as the `steer-away` console script."""

import sys

from steer_away.cli import main

sys.exit(main())
