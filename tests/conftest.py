"""Shared fixtures: where the offline data lives, and a clean Keras cache.

The ImageNet photos are not in the repository: they lie in ``../shared/data``
beside the checkout (or wherever ``$KOALA_DATA`` points). A test that needs
them FAILS when they are missing: a skipped test is not a pass.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KOALA_DATA", ROOT.parent / "shared" / "data"))
BUNDLED = ROOT / "data" / "historical"
collect_ignore = ["e2e"]  # the browser tests run with `make e2e` (pytest tests/e2e), not with `pytest tests`


def require(path):
    """Return ``path``, failing the test loudly when it is missing."""
    path = Path(path)
    if not path.exists():
        pytest.fail(f"test data missing: {path} (put the offline data at ../shared/data or set KOALA_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    return require(SHARED)


@pytest.fixture(scope="session")
def val_folder():
    return require(SHARED / "imagenet_val_1300")


@pytest.fixture(scope="session")
def sample_folder():
    return require(SHARED / "imagenet_sample_1000")


@pytest.fixture(scope="session")
def historical_folder():
    return require(BUNDLED)


@pytest.fixture(scope="session")
def sample_photos(sample_folder):
    """A dozen real colour ImageNet photos (paths), gray ones left out."""
    gray = set((sample_folder / "GRAYSCALE_FILES.txt").read_text().split())
    return [p for p in sorted(sample_folder.glob("*.JPEG")) if p.name not in gray][:12]


@pytest.fixture(scope="session")
def lite0():
    """The offline backbone with its real ImageNet weights."""
    from koala_utils.backbones import get_backbone

    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def small_records(tmp_path_factory, sample_photos, lite0):
    """Records of the dozen sample photos, with a val split that is never empty."""
    from koala_utils import data

    out = tmp_path_factory.mktemp("records")
    manifest = data.prepare(sample_photos, out, backbone=lite0, shard_size=5, val_fraction=0.25, progress=False)
    return out, manifest
