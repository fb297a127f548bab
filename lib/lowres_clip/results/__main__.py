"""``python -m lowres_clip.results``."""

import sys

from .cli import main

sys.exit(main())
