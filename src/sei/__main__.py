"""``python -m sei`` (also what ``torchrun -m sei train ...`` launches)."""

import sys

from sei.cli import main

sys.exit(main())
