import os
import sys

# `harness run` with HARNESS_WORKER=1 (the Snakefile sets it for local jobs) runs in a warm worker
# (harness/worker.py) that has torch & co. imported: decide before importing anything heavy.
if os.environ.get("HARNESS_WORKER") == "1":
    from harness.worker import client_main

    status = client_main(sys.argv)
    if status is not None:
        sys.exit(status)

from harness.cli import main

sys.exit(main())
