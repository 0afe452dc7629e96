"""`python -m attnstreams`: the `attnstreams` command, for when its script is not on PATH."""

import sys

from attnstreams.cli import main

sys.exit(main())
