"""Write a fast launcher for a Berth command into the virtualenv's bin/.

The launcher runs the virtualenv's interpreter with ``-I -S``: no ``site`` import and no user
paths, which cuts interpreter start-up from ~50 ms to ~12 ms. It puts ``src/`` on ``sys.path``
itself, so it works with the editable install ``make install`` makes.

Usage: launcher.py VENV SRC NAME MODULE [FUNCTION]   (FUNCTION defaults to main)
"""

import os
import sys

TEMPLATE = """#!{python} -IS
import sys
sys.path.insert(0, {src!r})
from {module} import {function}
sys.exit({function}())
"""


def write_launcher(venv: str, src: str, name: str, module: str, function: str = "main") -> None:
    path = os.path.join(venv, "bin", name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        python = os.path.join(venv, "bin", "python")
        f.write(TEMPLATE.format(python=python, src=src, module=module, function=function))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    write_launcher(*sys.argv[1:6])
