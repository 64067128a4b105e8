"""Stand-in for the runner in the operator's tests: does what the test's control file says.

Reads ``CONTROL_DIR/<run name>`` (JSON: ``sleep`` seconds, ``exit`` code; default 1 and
0). The control directory lives outside /tmp, which is the pod's own emptyDir, and is
only read: the sandbox's root filesystem is read-only. Before sleeping it prints one
JSON line with the environment it was given, so a test can read the pod log and see
what an agent in the pod would see.
"""

import json
import os
import pathlib
import sys
import time

control = pathlib.Path(sys.argv[1]) / os.environ.get("ORCHESTRATOR_RUN_NAME", "unknown")
plan = json.loads(control.read_text()) if control.exists() else {}
print(json.dumps({"report": {"env": dict(os.environ), "uid": os.getuid()}}), flush=True)
time.sleep(float(plan.get("sleep", 1)))
sys.exit(int(plan.get("exit", 0)))
