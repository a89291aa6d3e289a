"""The package as pip builds it: every folder of the source layout is a listed package and
every non-Python file in it is package data, so a wheel (``pip install .``, the board
install) has what a checkout has (pretrained weights, regmap.json, bitstreams/kv260)."""

import fnmatch
import importlib.metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10 (the board image): the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = CONFIG["tool"]["setuptools"]


def source_folders():
    """{package name: folder} for every folder below the package-dir roots (hidden folders
    and caches excluded), named as setuptools maps them."""
    out = {}
    for package, folder in SETUPTOOLS["package-dir"].items():
        for d in [ROOT / folder, *(ROOT / folder).rglob("*")]:
            rel = d.relative_to(ROOT / folder)
            if d.is_dir() and not any(p.startswith((".", "__")) for p in rel.parts):
                out[".".join([package, *rel.parts])] = d
    return out


def test_every_source_folder_is_a_listed_package():
    folders = source_folders()
    # a folder mapped by its own package-dir entry is listed under that name
    missing = sorted(name for name in folders if name not in SETUPTOOLS["packages"]
                     and not any(name == k for k in SETUPTOOLS["package-dir"]))
    assert not missing, f"add to [tool.setuptools] packages: {missing}"
    assert "skip2lora.bitstreams.kv260" in folders and "skip2lora.pretrained" in folders


def test_every_data_file_is_package_data():
    patterns = SETUPTOOLS["package-data"]
    unshipped = []
    for package, folder in source_folders().items():
        for f in folder.iterdir():
            if f.is_file() and f.suffix not in (".py", ".pyc") and not f.name.startswith("."):
                if not any(fnmatch.fnmatch(f.name, p) for p in patterns.get(package, [])):
                    unshipped.append(str(f.relative_to(ROOT)))
    assert not unshipped, f"add to [tool.setuptools.package-data]: {unshipped}"
    shipped = patterns["skip2lora.bitstreams.kv260"]
    for built in ("skip2lora.bit", "skip2lora.hwh", "manifest.json"):  # what a Vivado build adds
        assert any(fnmatch.fnmatch(built, p) for p in shipped), built


def test_license_is_an_spdx_expression_and_the_version_is_installed():
    assert CONFIG["project"]["license"] == "MIT"
    assert importlib.metadata.version("skip2lora") == CONFIG["project"]["version"]
