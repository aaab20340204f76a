import sys

from deepseek_tf.train.cli import main

sys.exit(main())
