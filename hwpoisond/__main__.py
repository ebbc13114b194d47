"""`python -m hwpoisond`: the same CLI as the console script."""

import sys

from hwpoisond.cli import main

sys.exit(main())
