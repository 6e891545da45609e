"""Import TensorFlow without its start-up chatter on stderr.

TensorFlow 2.21 prints "All log messages before absl::InitializeLog() ..." and an INFO line about
oneDNN from C++ before any log level applies (TF_CPP_MIN_LOG_LEVEL does not reach them), which
would break the project's promise of one clear line on stderr. The import runs with file
descriptor 2 pointed at a temporary file; afterwards every line that is not known chatter is
passed on, so real import errors and warnings still show.
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager

CHATTER = ("All log messages before absl::InitializeLog() is called",
           "oneDNN custom operations are on",
           "This TensorFlow binary is optimized to use available CPU instructions",
           "To enable the following instructions",
           "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
           "computation placer already registered", "TF-TRT Warning")


@contextmanager
def filtered_stderr(chatter=CHATTER):
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.strip() and not any(c in line for c in chatter):
                    print(line, file=sys.stderr)


def import_tensorflow():
    """(tensorflow, keras), imported quietly, with TF_CPP_MIN_LOG_LEVEL=2 and the Keras backend set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with filtered_stderr():
        import keras
        import tensorflow as tf
    return tf, keras
