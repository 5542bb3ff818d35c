"""Build tiny pure-Python wheels for the installer tests (a wheel is a zip with the module and
its dist-info: METADATA, WHEEL, RECORD), so the tests need no network for them."""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str, requires=(), body: str = "") -> Path:
    """``<name>-<version>-py3-none-any.whl`` in ``folder``, module ``name`` (with ``__version__``)."""
    folder.mkdir(parents=True, exist_ok=True)
    mod = name.replace("-", "_")
    di = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": f'__version__ = "{version}"\n{body}',
        f"{di}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                          + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{di}/RECORD,,")
    files[f"{di}/RECORD"] = "\n".join(record) + "\n"
    whl = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl
