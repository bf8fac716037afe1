"""Developer sessions: ``nox -s tests``, ``lint``, ``docs``, ``golden`` (regenerate parity outputs), ``plugins``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
ROOT = Path(__file__).parent
# The reference pins, from the package index pip is configured with (PyPI's build runs on CPU too; a mirror
# of download.pytorch.org/whl/cpu can be given with PIP_INDEX_URL for the smaller CPU-only wheels).
TORCH = ("torch==2.14.1", "torchvision==0.29.1")


@nox.session
def tests(session: nox.Session) -> None:
    """ttlx's own tests (no torch needed)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly and check that the generated command reference is current."""
    session.install("-e", ".[test]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(Path(session.create_tmp()) / "site"))
    session.run("python", "scripts/cli_reference.py", "--check")


@nox.session
def golden(session: nox.Session) -> None:
    """Rebuild tests/golden/ from torchvision and torchxrayvision: the outputs the parity tests compare against."""
    session.install(*TORCH, "numpy", "torchxrayvision==1.5.7")
    session.run("python", "scripts/make_golden.py", *session.posargs)  # e.g. `nox -s golden -- densenet121 xrv`


@nox.session
def plugins(session: nox.Session) -> None:
    """Install ttlx with every plugin package under plugins/ and run each plugin's tests."""
    session.install("-e", ".[test]")
    for package in sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()):
        session.install("-e", str(package))
        session.run("pytest", "-q", str(package / "tests"), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the PyTorch reference recipe (benchmarks/run.py); torch gets its own venv.

    ``nox -s bench -- --quick`` is a smoke run; arguments after ``--`` go to run.py. Pass
    ``--reference-python PY`` to use an existing torch interpreter (e.g. a CUDA build on a GPU machine).
    """
    session.install("-e", ".")
    args = list(session.posargs)
    if "--reference-python" not in args:
        reference = Path(session.virtualenv.location).parent / "bench-reference"
        if not (reference / "bin" / "python").exists():
            session.run("python", "-m", "venv", str(reference))
        session.run(str(reference / "bin" / "python"), "-m", "pip", "install", "-q", *TORCH, "numpy",
                    "pillow", external=True)
        args += ["--reference-python", str(reference / "bin" / "python")]
    session.run("python", "benchmarks/run.py", *args)
