"""`python -m deepseek_tf.search`: the same command as `deepseek-tf search`."""

import sys

from deepseek_tf.index.search import main

if __name__ == "__main__":
    sys.exit(main())
