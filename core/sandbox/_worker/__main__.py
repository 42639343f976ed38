"""Entry point of the REPL worker process: ``python -I -S <this directory> CONFIG``."""

import os
import sys
import traceback

if __name__ == "__main__":
    # Python put this directory on sys.path. Its parent, for as long as the imports take, lets the modules import
    # each other as the package they are in the host (relative imports). It comes off again at once: model code
    # can neither import nor read the worker's own files (they are not among the confined worker's read paths).
    _parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = _parent
    try:
        from _worker._launch import main
    finally:
        sys.path.remove(_parent)
    try:
        main(sys.argv)
    except BaseException:
        traceback.print_exc()
        os._exit(70)
