"""The scoring side runs where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is not installed here")
    sys.meta_path.insert(0, NoTorch())
    """
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_import_is_cheap():
    out = run("""
        import ednn_dask
        print(sorted(m for m in ("torch", "onnxruntime") if m in sys.modules))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_scoring_without_torch(exact_ising2d):
    _, model, _ = exact_ising2d
    out = run(f"""
        import numpy as np
        from ednn_dask import score
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")
        lattice = np.ones((8, 8), np.int8)
        print(score(lattice, {str(model.path)!r}, chunks=4).energy)
    """)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == -128.0
