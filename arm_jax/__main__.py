import sys

from arm_jax.cli.main import main

sys.exit(main())
