import sys

from deepseek_tf.export.cli import main

sys.exit(main())
