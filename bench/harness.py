#!/usr/bin/env python3
"""Side-by-side benchmark harness for ringmux, nginx and HAProxy.

Started by bench/run.sh (which installs tools, builds ringmux, raises the fd
limit and pins this process to CPU 0). Standard library only. The code is
the package bench/ringbench/ (its docstring describes a run); this file is
its entry point, `python3 bench/harness.py [flags] [scenario...]`.

The scale notes the scale report points to ("see the scale notes in
bench/harness.py") are the comment above the scale definition in
ringbench/scenarios/scale.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringbench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
