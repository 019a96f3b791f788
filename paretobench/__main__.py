import sys

from paretobench.cli import main

sys.exit(main())
