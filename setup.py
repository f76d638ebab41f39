"""Packaging that pyproject.toml cannot declare: the Alembic migrations live at the top of the
repository (migrations/) yet ship inside the package as ``app.migrations``, so an installed
wheel (and an editable install) migrates with no source tree and no ini file."""

from setuptools import find_packages, setup

setup(
    # the pages' templates as a package of data files: installed beside app/pages, and
    # named, so setuptools does not warn of an importable directory left out
    packages=[*find_packages(include=["app", "app.*"]), "app.pages.templates", "app.migrations",
              "app.migrations.versions"],
    package_dir={"app.migrations": "migrations"},
)
