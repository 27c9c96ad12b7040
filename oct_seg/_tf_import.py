"""Import TensorFlow once with its C++ start-up notices silenced."""
import os
import sys


def import_tensorflow_quietly():
    """Import TensorFlow with the C++ start-up lines (absl / oneDNN notices, printed whatever
    TF_CPP_MIN_LOG_LEVEL says in TF 2.21) sent to /dev/null, so that stderr carries only the
    caller's own messages. Python errors of the import still propagate. Set OCT_SEG_DEBUG=1
    to see the notices."""
    if "tensorflow" in sys.modules or os.environ.get("OCT_SEG_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
