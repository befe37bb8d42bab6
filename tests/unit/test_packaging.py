"""pyproject.toml in the form current packaging tools read without a deprecation warning."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_license_is_an_spdx_expression_the_build_backend_reads() -> None:
    """A `{text = ...}` table is deprecated (setuptools >= 77 warns on every build); an SPDX
    string needs setuptools >= 77 to build."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    license_ = data["project"]["license"]
    assert isinstance(license_, str) and canonicalize_license_expression(license_) == "MIT"
    [setuptools] = [Requirement(r) for r in data["build-system"]["requires"]
                    if Requirement(r).name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")
