"""Text: the WordPiece tokenizer that runs in tf.data and inside exported graphs."""
