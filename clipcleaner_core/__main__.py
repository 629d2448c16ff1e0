"""``python -m clipcleaner_core``: the command line."""
import sys

from clipcleaner_core.cli import main

sys.exit(main())
