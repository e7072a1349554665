"""`frl plugins` lists the environment kind's built-in members, and their data sources."""
from __future__ import annotations

import re
import subprocess
import sys


def test_frl_plugins_lists_the_environments_and_their_data_sources():
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "plugins"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^calculator .*dataset 'calculator', environment 'calculator'$", out.stdout, re.M), out.stdout
    assert re.search(r"^guess_number .*dataset 'guess_number', environment 'guess_number'$", out.stdout, re.M)
