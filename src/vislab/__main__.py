import sys

from vislab.cli import main

sys.exit(main())
