"""The `platform` package must behave as the standard library module too."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_names_are_reexported() -> None:
    import platform

    assert platform.__file__.startswith(str(ROOT)), "tests must import the project's platform package"
    assert isinstance(platform.system(), str) and platform.system()
    assert platform.python_version() == ".".join(map(str, sys.version_info[:3]))
    assert callable(platform._syscmd_ver)  # private names are re-exported too
    assert platform.uname().machine


def test_heavy_libraries_import_through_the_shim() -> None:
    code = (
        "import platform, torch, ray, mlflow, uuid;"
        f"assert platform.__file__.startswith({str(ROOT)!r});"
        "print(platform.system(), platform.machine(), uuid.uuid4().hex[:4], torch.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "Linux"
