"""``python -m continue_orchestrator.runner``: the sandbox image's entrypoint."""

import sys

from continue_orchestrator.runner import _main

sys.exit(_main.main())
