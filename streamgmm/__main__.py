"""``python -m streamgmm`` is the ``streamgmm`` command."""

import sys

from .cli import main

sys.exit(main())
