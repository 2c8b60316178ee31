"""Checks the release artifacts (tox -e package): `twine check --strict`
passes on the sdist and the wheel in DIST, and each installs into a fresh
virtualenv and imports from there, with the version of
keras_lazyadam/__init__.py, which is CHANGELOG.md's first entry.

    python .ci/check_package.py DIST

The fresh virtualenvs see this environment's site-packages after their own
(a .pth file: keras and JAX, so the import needs no download); the package
itself comes only from the artifact (`pip install --no-deps`), and the
import runs outside the source tree.
"""

import glob
import os
import re
import site
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_version():
    with open(os.path.join(ROOT, "keras_lazyadam", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)[1]


def changelog_version():
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        return re.search(r"^## \[?([0-9][^\] ]*)", f.read(), re.M)[1]


def check(artifact, version):
    with tempfile.TemporaryDirectory() as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        py = os.path.join(venv, "bin", "python")
        own = subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        with open(os.path.join(own, "parent_site_packages.pth"), "w") as f:
            f.write("\n".join(site.getsitepackages()) + "\n")
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", artifact], check=True)
        probe = (
            "import os, sys, keras_lazyadam as k; "
            "assert k.__file__.startswith(sys.prefix), k.__file__; "
            "assert callable(k.LazyAdam) and callable(k.load_tfa_weights); "
            "print(k.__version__, os.path.dirname(k.__file__))"
        )
        env = dict(os.environ, KERAS_BACKEND="jax")
        proc = subprocess.run([py, "-c", probe], cwd=tmp, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{artifact}: import failed:\n{proc.stderr}"
        out = proc.stdout.split()
        assert out[0] == version, f"{artifact}: version {out[0]}, want {version}"
        subprocess.run(
            [os.path.join(venv, "bin", "keras-lazyadam-demo"), "--help"],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
        )
        print(f"ok: {os.path.basename(artifact)} installs and imports ({out[1]})")


def main(dist):
    version = source_version()
    assert changelog_version() == version, (
        f"CHANGELOG.md starts with {changelog_version()}, the package is {version}"
    )
    artifacts = {
        "sdist": glob.glob(os.path.join(dist, f"keras_lazyadam-{version}.tar.gz")),
        "wheel": glob.glob(os.path.join(dist, f"keras_lazyadam-{version}-py3-none-any.whl")),
    }
    for kind, found in artifacts.items():
        assert len(found) == 1, f"want one {kind} of version {version} in {dist}: {found}"
    files = [found[0] for found in artifacts.values()]
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files], check=True)
    for artifact in files:
        check(artifact, version)


if __name__ == "__main__":
    main(sys.argv[1])
