import sys

from netadv.cli import main

sys.exit(main())
