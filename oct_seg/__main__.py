"""`python -m oct_seg` = the `oct-seg` command line."""
import sys

from oct_seg.cli import main

sys.exit(main())
