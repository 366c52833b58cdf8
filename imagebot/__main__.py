"""``python -m imagebot``: the same as the ``imagebot`` command."""

import sys

from imagebot.cli import main

sys.exit(main())
