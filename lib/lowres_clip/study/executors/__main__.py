"""``python -m lowres_clip.study.executors run-job ...``: one job of the local executor
(:func:`lowres_clip.study.executors.child.main`)."""

import sys

from .child import main

sys.exit(main())
