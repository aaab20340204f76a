"""`python -m deepseek_tf.search`: the same command as `deepseek-tf search`."""

import sys

from deepseek_tf.retrieval.cli import search_main as main

if __name__ == "__main__":
    sys.exit(main())
