"""``python -m lowres_clip.study``: the study's command line (:func:`lowres_clip.study.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
