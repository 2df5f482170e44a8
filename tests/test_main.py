"""``python -m climit`` runs the same command line as the ``climit`` console script."""

import subprocess
import sys


def test_python_dash_m_climit_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "climit", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: climit ") and "inspect" in proc.stdout
    # The exit status is the command's: a user error is still non-zero.
    bad = subprocess.run([sys.executable, "-m", "climit", "inspect", "/nonexistent/run"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("climit: error: no such file")
