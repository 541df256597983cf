"""The training-photo builder (issue 11) on a tiny fake repository made here: fetch, select, manifest, rebuild."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from koala_utils import photo_sources as ps


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _photo(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory, sample_photos):
    """A repository with real colour photos, a gray one, an exact duplicate, an ImageNet-val name, and a file
    outside the listed folder; returns (work tree, commit)."""
    repo = tmp_path_factory.mktemp("fake_source")
    _git("init", "-q", cwd=repo)
    (repo / "photos").mkdir()
    for i, src in enumerate(sample_photos[:6]):
        shutil.copy(src, repo / "photos" / f"p{i}.jpg")
    shutil.copy(sample_photos[0], repo / "photos" / "z_copy_of_p0.jpg")
    _photo(repo / "photos" / "gray.jpg", np.full((40, 60, 3), 128, np.uint8))
    shutil.copy(sample_photos[7], repo / "photos" / "ILSVRC2012_val_00000001.JPEG")
    shutil.copy(sample_photos[8], repo / "elsewhere.jpg")
    _git("add", ".", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "photos", cwd=repo)
    _git("config", "uploadpack.allowFilter", "true", cwd=repo)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return repo, commit


@pytest.fixture(scope="module")
def fake_source(fake_repo):
    repo, commit = fake_repo
    return ps.Source("fake", "tests/fake", commit, ("photos",), "test photos", "test licence", 1)


def test_fetch_clones_the_pinned_commit_from_a_url_and_selection_filters(tmp_path, fake_repo, fake_source):
    repo, _ = fake_repo
    git_dirs = ps.fetch(tmp_path / "clones", [fake_source], url_of=lambda s: f"file://{repo}", log=lambda m: None)
    rows = ps.select(git_dirs, sources=[fake_source], max_share=1.0, log=lambda m: None)
    names = [r["name"] for r in rows]
    assert names == [f"fake/photos/p{i}.jpg" for i in range(6)]  # gray, duplicate, val name, outside path: out
    assert not (tmp_path / "clones" / "fake" / "elsewhere.jpg").exists()  # sparse: only the listed folder


def test_manifest_rebuilds_the_same_files_and_catches_a_changed_one(tmp_path, fake_repo, fake_source):
    repo, _ = fake_repo
    git_dirs = {"fake": repo / ".git"}
    rows = ps.select(git_dirs, sources=[fake_source], max_share=1.0, log=lambda m: None)
    manifest = tmp_path / "manifest.csv"
    ps.write_manifest(rows, manifest)
    assert manifest.read_text().splitlines()[0] == ",".join(ps.MANIFEST_FIELDS)
    again = ps.read_manifest(manifest, sources=[fake_source])
    assert [(r["name"], r["sha256"]) for r in again] == [(r["name"], r["sha256"]) for r in rows]
    out = tmp_path / "photos"
    assert ps.write_photos(again, git_dirs, out, sources=[fake_source], progress=False) == 6
    assert ps.verify(again, out) == []
    (out / again[2]["name"]).write_bytes(b"not the photo")
    assert ps.verify(again, out) == [again[2]["name"]]
    assert ps.write_photos(again, git_dirs, out, sources=[fake_source], progress=False) == 1  # only the bad one
    assert ps.write_photos(again, git_dirs, tmp_path / "part", limit=3, sources=[fake_source], progress=False) == 3
    tampered = [dict(r) for r in again]
    tampered[0]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="p0.jpg"):
        ps.write_photos(tampered, git_dirs, tmp_path / "other", sources=[fake_source], progress=False)


def test_manifest_refuses_an_unpinned_commit(tmp_path, fake_source):
    path = tmp_path / "m.csv"
    path.write_text("source,commit,path,sha256,licence\nfake,deadbeef0000,photos/a.jpg," + "0" * 64 + ",x\n")
    with pytest.raises(ValueError, match="not pinned"):
        ps.read_manifest(path, sources=[fake_source])


def test_photos_near_a_validation_photo_are_left_out(fake_repo, fake_source, sample_photos):
    repo, _ = fake_repo
    from koala_utils.images import load_image

    resized = Image.fromarray(load_image(sample_photos[3])).resize((150, 113))  # the same photo, resized
    exclude = np.array([ps.perceptual_hash(np.asarray(resized))], dtype=np.uint64)
    rows = ps.select({"fake": repo / ".git"}, exclude_hashes=exclude, sources=[fake_source], max_share=1.0,
                     log=lambda m: None)
    assert "fake/photos/p3.jpg" not in [r["name"] for r in rows]
    assert len(rows) == 5


def test_cap_subjects_keeps_every_subject_at_most_the_share():
    rows = [{"name": f"a{i:03d}", "subject": "cats"} for i in range(80)]
    rows += [{"name": f"b{i:03d}", "subject": "scenes"} for i in range(20)]
    rows += [{"name": f"c{i:03d}", "subject": "flowers"} for i in range(20)]
    capped = ps.cap_subjects(rows, 0.4)
    counts = ps.composition(capped)
    assert counts["cats"] <= 0.4 * len(capped) and counts["scenes"] == 20 and counts["flowers"] == 20
    assert counts["cats"] == 26


def test_committed_manifest_has_the_promised_size_and_mix():
    from pathlib import Path

    rows = ps.read_manifest(Path(__file__).resolve().parents[1] / "data" / "training_manifest.csv")
    assert len(rows) >= 20_000
    counts = ps.composition(rows)
    assert max(counts.values()) <= 0.4 * len(rows) + 1
    assert not any(Path(r["path"]).name.startswith("ILSVRC2012_val_") for r in rows)
    assert len({r["sha256"] for r in rows}) == len(rows)


def test_source_table_matches_the_documented_commits():
    assert {s.key for s in ps.SOURCES} == {"scenes", "imagenette", "clothing", "flowers", "catsdogs"}
    assert all(len(s.commit) == 40 for s in ps.SOURCES)
    assert ps.SOURCES[0].url == "https://github.com/zhabiki/paysage-classification.git"


def test_manifest_checksum_in_the_code_matches_the_committed_file():
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert hashlib.sha256((root / "data" / "training_manifest.csv").read_bytes()).hexdigest() == ps.MANIFEST_SHA256
    assert ps.manifest_file(root) == root / "data" / "training_manifest.csv"
