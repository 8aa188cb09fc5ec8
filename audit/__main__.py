import sys

from audit.side_process import start_early

start_early(sys.argv[1:])  # before the CLI's imports (docs/ARCHITECTURE.md §12)

from audit.cli import main  # noqa: E402

sys.exit(main())
