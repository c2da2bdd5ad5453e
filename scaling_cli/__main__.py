import sys

from scaling_cli import main

sys.exit(main())
