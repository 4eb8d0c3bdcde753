"""``python -m cascade_rcnn`` = the ``cascade-rcnn`` command."""
import sys

from .cli import main

sys.exit(main())
