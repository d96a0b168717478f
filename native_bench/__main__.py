"""``python -m native_bench [--quick] [--out DIR] [--only NAME[,NAME]] [--update-readme]``."""

import sys

from native_bench.suite import main

sys.exit(main())
