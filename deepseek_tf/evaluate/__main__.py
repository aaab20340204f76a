import sys

from deepseek_tf.evaluate.cli import main

sys.exit(main())
