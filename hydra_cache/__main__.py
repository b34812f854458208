"""``python -m hydra_cache`` is the ``hydra-cache`` command."""

import sys

from hydra_cache.cli import main

# Guarded: ``hydra-cache build -j N`` starts worker processes with "spawn", which imports the
# main module again (as __mp_main__), and must not run the command a second time.
if __name__ == "__main__":
    sys.exit(main())
