"""``python -m hydra_cache`` is the ``hydra-cache`` command."""

import sys

from hydra_cache.cli import main

sys.exit(main())
