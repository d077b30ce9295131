import sys

from mtkd.cli import main

sys.exit(main())
