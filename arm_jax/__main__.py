import sys

from arm_jax.cli import main

sys.exit(main())
