"""The wheel works on its own: built from this tree, installed into a fresh virtual
environment (torch and the other dependencies shared from this interpreter's site-packages,
not rnndoctor), it diagnoses a fixture and draws its report from the templates it carries,
run from a folder outside the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "rnndoctor", src / "rnndoctor", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed: {proc.stderr[-2000:]}")
    (whl,) = dist.glob("rnndoctor-*.whl")
    return whl


def test_the_wheel_carries_the_package_and_its_templates(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "rnndoctor/report/templates/report.html.j2" in names and "rnndoctor/report/background.py" in names
    assert not any(n.startswith(("tests/", "fixtures/", "bench/", "checks/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "rnndoctor = rnndoctor.cli:main" in text and "pytest11" in text


def test_a_wheel_installed_into_a_fresh_environment_diagnoses_a_script(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600, env=clean)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = work / "train.py"
    script.write_text((ROOT / "fixtures" / "or_mse_stuck.py").read_text())
    where = subprocess.run([str(python), "-c", "import rnndoctor; print(rnndoctor.__file__)"], capture_output=True, text=True,
                           cwd=work, env=clean, timeout=120)
    assert where.returncode == 0 and str(env_dir) in where.stdout and str(ROOT) not in where.stdout, where.stdout + where.stderr
    proc = subprocess.run([str(python), "-m", "rnndoctor", "diagnose", "train.py", "--max-steps", "60", "--out", "run", "--quiet",
                           "--fail-on", "never"], capture_output=True, text=True, cwd=work, env=clean, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((work / "run" / "findings.json").read_text())["findings"] is not None
    assert "re-render with" in (work / "run" / "report.html").read_text()  # drawn from the wheel's templates
