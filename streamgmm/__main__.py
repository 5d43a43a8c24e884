"""``python -m streamgmm`` is the ``streamgmm`` command."""

import sys

from streamgmm.cli.command import main

sys.exit(main())
