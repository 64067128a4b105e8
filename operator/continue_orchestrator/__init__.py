"""Continue Orchestrator: run Continue CLI agents in gVisor sandboxes under policy-as-code.

Each concern lives in its own subpackage with a small public surface; import the
subpackage and use its names qualified (``policy.decide``, ``ledger.Entry``).
"""

__version__ = "0.1.0"
