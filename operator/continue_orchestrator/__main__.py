"""``python -m continue_orchestrator`` is the ``orchestrator`` command."""

import sys

from continue_orchestrator import cli

sys.exit(cli.main())
