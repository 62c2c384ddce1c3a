"""`python -m seq2seq_keras …`: see `seq2seq_keras.cli`."""

import sys

from seq2seq_keras.cli import main

sys.exit(main())
