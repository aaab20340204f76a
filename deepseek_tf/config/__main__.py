"""`python -m deepseek_tf.config [PATH]` (`make docs`): writes docs/configuration.md."""

import sys

from deepseek_tf.config.reference import write_reference

print(f"wrote {write_reference(*sys.argv[1:2])}")
