"""The diagnostics report: every field, and no secret from the environment or an error log."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sentinel_landslide.core import lasterror
from sentinel_landslide.deps import diagnostics

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"AWS_SECRET_ACCESS_KEY": "sekret123", "PC_SDK_SUBSCRIPTION_KEY": "pcsubkey987",
           "GITHUB_TOKEN": "ghp_fAkEtOkEn42"}


def test_status_prints_every_field_and_no_secret(tmp_path, qgis_python):
    """The CLI with QGIS's Python, fake tokens in its environment and in the last error's log."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".build" / "plugins"), QGIS_CUSTOM_CONFIG_PATH=str(tmp_path),
               QT_QPA_PLATFORM="offscreen", TMPDIR=str(tmp_path), **SECRETS)
    rec = ("from sentinel_landslide.core import lasterror; lasterror.record('landslide:fetch', 'HTTP 403', "
           "'GET https://x.blob.core.windows.net/a.tif?se=2026&sig=AbC%2Bsignature&sp=r failed; "
           "token=sekret123; auth ghp_fAkEtOkEn42')")
    subprocess.run([qgis_python, "-c", rec], env=env, check=True, timeout=120)
    p = subprocess.run([qgis_python, "-m", "sentinel_landslide.deps", "status"], env=env, capture_output=True,
                       text=True, timeout=300)
    out = p.stdout
    assert p.returncode in (0, 1), p.stderr  # 1: a required package is missing (QGIS's Python has none here)
    for field in diagnostics.FIELDS:
        assert f"\n{field}: " in out, field
    for line in ("QGIS: 3.", "Qt: 5.", "GDAL: 3.", "PROJ: ", "CPU features: AVX2 "):
        assert line in out
    assert "[Detection] onnxruntime>=1.17,<2: " in out and "[Cluster runs] distributed" in out
    assert "Last algorithm error: landslide:fetch at " in out and "HTTP 403" in out
    assert "x.blob.core.windows.net/a.tif?[query redacted]" in out
    for value in SECRETS.values():
        assert value not in out
    assert "sig=AbC" not in out and "se=2026" not in out


def test_redact_keeps_the_text_and_drops_the_secrets():
    env = {"MY_API_KEY": "k-12345", "PATH": "/usr/bin"}
    text = ("proxy http://bob:hunter2@proxy.local:3128 api_key=abcd k-12345 "
            "Authorization: Bearer eyJhbGciOi https://pc.example/x.tif?st=1&sig=zz /usr/bin")
    out = diagnostics.redact(text, env)
    assert "hunter2" not in out and "abcd" not in out and "k-12345" not in out and "eyJhbGciOi" not in out
    assert "sig=zz" not in out and "proxy.local:3128" in out and "/usr/bin" in out


def test_the_last_error_is_kept_in_memory_and_on_file(tmp_path, monkeypatch):
    monkeypatch.setattr(lasterror, "path", lambda: tmp_path / "last_error.json")
    monkeypatch.setattr(lasterror, "_LAST", {})
    assert lasterror.last() == {}
    lasterror.record("landslide:detect", "QgsProcessingException: boom", "line\n" * 5000)
    got = lasterror.last()
    assert got["algorithm"] == "landslide:detect" and len(got["log"]) == lasterror.MAX_LOG
    monkeypatch.setattr(lasterror, "_LAST", {})  # another process reads the file
    assert lasterror.last()["message"] == "QgsProcessingException: boom"
    assert "boom" in diagnostics.report(qgis=False)
