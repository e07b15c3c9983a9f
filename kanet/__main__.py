import sys

from kanet.cli import main

sys.exit(main())
