import sys

from deepseek_tf.cli.main import main

sys.exit(main())
