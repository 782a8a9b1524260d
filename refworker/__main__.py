import sys

from refworker.cli import main

# Guarded so that importing this module (import-graph tests do) does not start a worker.
if __name__ == "__main__":
    sys.exit(main())
