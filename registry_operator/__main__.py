import sys

from registry_operator.cli import main

sys.exit(main())
