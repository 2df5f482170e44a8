"""A flax release that does not import under the installed jax gives one clear ImportError."""

import subprocess
import sys
import textwrap


def test_incompatible_flax_names_both_versions():
    # A fresh interpreter in which importing flax.nnx fails the way flax 0.12.8 does under
    # jax 0.11.2 (seen on a GPU image): AttributeError on a jax.experimental name.
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "flax.nnx":
                    raise AttributeError("module 'jax.experimental.hijax' has no attribute "
                                         "'HiPrimitive'")
        sys.meta_path.insert(0, Broken())
        try:
            import climit.imitator
        except ImportError as e:
            print("IMPORTERROR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = out.stdout.strip()
    assert line.startswith("IMPORTERROR flax "), out.stdout + out.stderr
    assert "does not import under jax" in line and "HiPrimitive" in line and "0.12.10" in line
