"""Packaging: the repository's folders installed under one package, ``coordinator``.

pyproject.toml holds the metadata; this file only maps folders to
subpackages (``client/`` -> ``coordinator.client`` and so on), which
setuptools' declarative ``packages.find`` cannot do with a prefix.
"""

from setuptools import find_packages, setup

FOLDERS = ("client", "cluster", "chaos", "saga", "twopc", "grammar", "consensus")

packages = ["coordinator"]
package_dir = {"coordinator": "coordinator"}
for folder in FOLDERS:
    package_dir[f"coordinator.{folder}"] = folder
    packages += [f"coordinator.{folder}", *(f"coordinator.{folder}.{sub}" for sub in find_packages(folder))]

# The dashboard's files (cluster/api/http_ui.py serves them from the package).
package_data = {"coordinator.cluster.api": ["ui/*.html", "ui/*.js", "ui/*.css"]}

setup(packages=packages, package_dir=package_dir, package_data=package_data)
