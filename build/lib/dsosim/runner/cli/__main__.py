"""``python -m dsosim.runner.cli``: the same as the ``dsosim`` command."""

import sys

from dsosim.runner.cli import main

sys.exit(main())
