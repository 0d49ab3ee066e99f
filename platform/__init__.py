"""Shim: make `platform` both the standard library module and this project's package.

torch, ray, mlflow and uuid call `platform.system()` and friends at import time. Because the
repository root comes first on `sys.path` (for `python -m platform.sweep` and for Ray workers),
`import platform` finds this package instead of the standard library's `platform.py`. We load
the standard library module from its own file and re-export every name it defines, private ones
included, so both `platform.system()` and `platform.sweep` work.
"""

import importlib.util as _ilu
import sysconfig as _sysconfig
from pathlib import Path as _Path

_spec = _ilu.spec_from_file_location(
    "_stdlib_platform", _Path(_sysconfig.get_paths()["stdlib"]) / "platform.py"
)
_stdlib_platform = _ilu.module_from_spec(_spec)
_spec.loader.exec_module(_stdlib_platform)
globals().update(
    {k: v for k, v in vars(_stdlib_platform).items() if k not in ("__name__", "__spec__", "__loader__", "__file__", "__path__", "__package__", "__builtins__", "__doc__")}
)
