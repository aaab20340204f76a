import sys

from deepseek_tf.bench.bench import main

sys.exit(main())
