"""The ``calculator`` environment: arithmetic with a ``calculate`` tool.

This package's ``__init__`` stays empty on purpose: the tool sandbox imports ``tool.py`` in a fresh subprocess
for every call, through this package, and importing feedback_rl (and torch) there would cost seconds per call.
The plugin itself is ``plugin.py``.
"""
