"""``python -m evalkit``: the ``evalkit`` command.

``python -m`` puts the working folder first on the import path; evalkit takes it off again, so a stray
``torch.py`` or ``numpy.py`` where the command runs is never imported, nor is a ``module:function`` adapter
found there by accident. Ask for it explicitly with ``PYTHONPATH=.`` (or a path).
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)

from evalkit.cli import entry

entry()
