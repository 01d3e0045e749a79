"""The model digest, the record kept in a check run, and unpacking an untrusted artifact."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import zipfile

import pytest

from mlflow_ci.provenance import (
    ProvenanceError,
    Record,
    extract_zip,
    logged_model_id,
    model_digest,
)

DIGEST = "sha256:" + "ab" * 32


def tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_the_digest_is_the_documented_formula_and_ignores_times_and_modes(tmp_path):
    a = tree(tmp_path / "a", {"MLmodel": b"flavors: {}\n", "model.pkl": b"\x00\x01", "sub/req.txt": b"x\n"})
    expected = hashlib.sha256("".join(
        f"{hashlib.sha256(data).hexdigest()}  {rel}\n"
        for rel, data in sorted({"MLmodel": b"flavors: {}\n", "model.pkl": b"\x00\x01", "sub/req.txt": b"x\n"}.items())
    ).encode()).hexdigest()
    assert model_digest(a) == "sha256:" + expected
    shell = subprocess.run("find . -type f | LC_ALL=C sort | sed 's|^\\./||' | xargs sha256sum | sha256sum",
                           shell=True, cwd=a, capture_output=True, text=True, check=True)
    assert model_digest(a) == "sha256:" + shell.stdout.split()[0]
    b = tree(tmp_path / "b", {"sub/req.txt": b"x\n", "model.pkl": b"\x00\x01", "MLmodel": b"flavors: {}\n"})
    os.utime(b / "model.pkl", (0, 0))
    (b / "MLmodel").chmod(0o600)
    (b / "empty-dir").mkdir()
    assert model_digest(b) == model_digest(a)


@pytest.mark.parametrize("change", ["byte", "rename", "extra", "missing"])
def test_any_change_of_bytes_or_names_changes_the_digest(tmp_path, change):
    files = {"MLmodel": b"flavors: {}\n", "model.pkl": b"weights"}
    before = model_digest(tree(tmp_path / "before", files))
    changed = dict(files)
    if change == "byte":
        changed["model.pkl"] = b"weightz"
    elif change == "rename":
        changed["model2.pkl"] = changed.pop("model.pkl")
    elif change == "extra":
        changed["notes.txt"] = b""
    else:
        del changed["model.pkl"]
    assert model_digest(tree(tmp_path / "after", changed)) != before


def test_links_and_empty_or_missing_trees_are_refused(tmp_path):
    root = tree(tmp_path / "m", {"MLmodel": b""})
    (root / "model.pkl").symlink_to("/etc/passwd")
    with pytest.raises(ProvenanceError, match="symbolic link"):
        model_digest(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProvenanceError, match="empty"):
        model_digest(tmp_path / "empty")
    with pytest.raises(ProvenanceError, match="no model directory"):
        model_digest(tmp_path / "absent")


def test_two_trees_never_encode_alike_names_with_line_breaks_are_refused(tmp_path):
    """One file named 'a\\n<hash>  b' would encode as two lines, like the two-file tree it imitates."""
    from mlflow_ci.provenance import file_sha256

    honest = tree(tmp_path / "honest", {"a": b"1", "b": b"2"})
    forged_name = "a\n" + file_sha256(honest / "b") + "  b"
    with pytest.raises(ProvenanceError, match="control character"):
        model_digest(tree(tmp_path / "forged", {forged_name: b"1"}))
    with pytest.raises(ProvenanceError, match="control character or a backslash"):
        model_digest(tree(tmp_path / "slash", {"a\\b": b"1"}))


def test_a_fifo_in_the_model_is_refused_not_read(tmp_path):
    import threading

    root = tree(tmp_path / "m", {"MLmodel": b""})
    os.mkfifo(root / "pipe")
    outcome: list = []

    def digest():
        try:
            outcome.append(model_digest(root))
        except ProvenanceError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=digest, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # the reader blocked on the FIFO: unblock it so the suite goes on, then fail
        with open(root / "pipe", "wb"):
            pass
        pytest.fail("model_digest blocked reading a FIFO")
    assert isinstance(outcome[0], ProvenanceError) and "not a regular file" in str(outcome[0])


def test_a_record_round_trips_through_external_id():
    record = Record("a" * 32, DIGEST, "m-" + "c" * 32, "12345/mlflow-ci-result")
    text = record.external_id()
    assert text == f"mlflow-ci/1;run={'a' * 32};digest={DIGEST};model=m-{'c' * 32};artifact=12345/mlflow-ci-result"
    assert Record.parse(text) == record
    assert record.workflow_run == 12345 and record.artifact_name == "mlflow-ci-result"
    assert "`" + DIGEST + "`" in record.markdown()


@pytest.mark.parametrize("text", [
    None, 42, "", "mlflow-ci/1", "mlflow-ci/2;run=abc;digest=" + DIGEST, "mlflow-ci/1;run=abc",
    "mlflow-ci/1;run=abc;digest=sha256:xyz", "mlflow-ci/1;run=abc;digest=" + DIGEST + ";run=def",
    "mlflow-ci/1;run=a b;digest=" + DIGEST, "mlflow-ci/1;run=abc;digest=" + DIGEST + ";artifact=../x",
    "mlflow-ci/1;run=abc;digest=" + DIGEST + ";color=red", "mlflow-ci/1;run=abc;digest=" + DIGEST + ";model=m-1",
    "mlflow-ci/1;run=abc;digest=" + DIGEST + ";" + "x" * 500,
])
def test_anything_else_in_external_id_is_no_record(text):
    assert Record.parse(text) is None


def test_logged_model_id_is_read_only_when_well_formed(tmp_path):
    good = tree(tmp_path / "good", {"MLmodel": f"artifact_path: x\nmodel_id: m-{'0' * 32}\n".encode()})
    assert logged_model_id(good) == "m-" + "0" * 32
    bad = tree(tmp_path / "bad", {"MLmodel": b"model_id: m-`rm -rf`\n"})
    assert logged_model_id(bad) is None and logged_model_id(tmp_path / "none") is None


def archive(entries: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def test_a_plain_archive_unpacks(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(archive([("result.json", b"{}", 0o100644), ("model/MLmodel", b"x", 0o644), ("model/", b"", 0o40755)]))
    out = extract_zip(path, tmp_path / "out", max_bytes=100)
    assert (out / "model" / "MLmodel").read_bytes() == b"x" and (out / "result.json").read_bytes() == b"{}"


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(("entries", "message"), [
    ([("../escape", b"x", 0o644)], "unsafe path"),
    ([("/etc/cron.d/x", b"x", 0o644)], "unsafe path"),
    ([("model/../../x", b"x", 0o644)], "unsafe path"),
    ([("C:/x", b"x", 0o644)], "unsafe path"),
    ([("a\\b", b"x", 0o644)], "unsafe path"),
    ([("model/link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "link or special file"),
    ([("a", b"x", 0o644), ("a", b"y", 0o644)], "appears twice"),
    ([("big", b"0" * 1000, 0o644)], "more than 100 bytes"),
])
def test_an_unsafe_archive_is_refused(tmp_path, entries, message):
    path = tmp_path / "a.zip"
    path.write_bytes(archive(entries))
    with pytest.raises(ProvenanceError, match=message):
        extract_zip(path, tmp_path / "out", max_bytes=100)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def test_a_broken_archive_is_a_usage_error(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ProvenanceError, match="not a readable zip"):
        extract_zip(path, tmp_path / "out", max_bytes=100)


def test_an_archive_with_corrupt_compressed_data_is_a_usage_error(tmp_path):
    """#24 item 9: zlib's error escaped as an unexpected failure (exit 4)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("result.json", bytes(range(256)).hex() * 20)
    data = bytearray(buf.getvalue())
    start = 30 + len("result.json")  # the local header, then the deflated bytes
    data[start + 5:start + 200] = b"\xff" * 195
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ProvenanceError, match=r"not a readable zip archive \(corrupt compressed data\)") as bad:
        extract_zip(path, tmp_path / "out", max_bytes=10**7)
    assert bad.value.exit_code == 2
