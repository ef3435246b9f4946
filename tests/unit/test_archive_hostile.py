"""verify-archive on archives built to attack the verifier or the committee that extracts after it: names that
climb out or are absolute, links, a decompression bomb, manifests of the wrong shape. Each is refused with
exit 1 and one line per problem, never a traceback, and nothing is written."""

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from lorarank.provenance import verify_archive

FORMAT = "lorarank-archive/1"
BODY = b"0.5\n"
SHA = hashlib.sha256(BODY).hexdigest()


def manifest(files=None, **over) -> dict:
    doc = {"format": FORMAT, "experiment": "exp", "tarball": "exp.tar.gz", "code": {"git_commit": None},
           "config": {}, "files": {"summary/a.csv": {"sha256": SHA, "bytes": len(BODY)}} if files is None else files}
    return {k: v for k, v in {**doc, **over}.items() if v is not ...}


def member(name: str, data: bytes = b"", kind=tarfile.REGTYPE, target: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, target
    return info, data


def tarball(path: Path, members, doc) -> Path:
    """`members`, then the manifest as `exp/MANIFEST.json` (bytes as given, or `doc` as JSON), gzipped."""
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*members, member("exp/MANIFEST.json", raw)]:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


GOOD = [member("exp/summary/a.csv", BODY)]
IN = "MANIFEST.json inside exp.tar.gz: "
HOSTILE = {
    "a member that climbs out": ([*GOOD, member("exp/../../PWNED", BODY)],
                                 manifest(files={"summary/a.csv": {"sha256": SHA, "bytes": 4},
                                                 "../../PWNED": {"sha256": SHA, "bytes": 4}}),
                                 ["'exp/../../PWNED': a member name that has an empty, '.' or '..' part",
                                  IN + "files: '../../PWNED' has an empty, '.' or '..' part"]),
    "an absolute member": ([*GOOD, member("/tmp/PWNED", BODY)], manifest(),
                           ["'/tmp/PWNED': a member name that is absolute"]),
    "an experiment named ..": ([member("../summary/a.csv", BODY)], manifest(experiment=".."),
                               ["'../summary/a.csv': a member name that has an empty, '.' or '..' part",
                                IN + "experiment name '..' is not allowed (letters, digits, '_', '.' and '-', not "
                                     "starting with '.' or '-')"]),
    "a symbolic link": ([*GOOD, member("exp/summary/passwd", kind=tarfile.SYMTYPE, target="/etc/passwd")],
                        manifest(), ["exp/summary/passwd: not a regular file"]),
    "a hard link": ([*GOOD, member("exp/summary/b.csv", kind=tarfile.LNKTYPE, target="/etc/shadow")], manifest(),
                    ["exp/summary/b.csv: not a regular file"]),
    "a member with a '.' part": ([*GOOD, member("exp/./summary/b.csv", BODY)], manifest(),
                                 ["'exp/./summary/b.csv': a member name that has an empty, '.' or '..' part"]),
    "a member with an empty part": ([*GOOD, member("exp//summary/b.csv", BODY)], manifest(),
                                    ["'exp//summary/b.csv': a member name that has an empty, '.' or '..' part"]),
    "a member with backslashes": ([*GOOD, member("exp/..\\..\\PWNED", BODY)], manifest(),
                                  ["'exp/..\\\\..\\\\PWNED': a member name that holds a backslash or NUL"]),
    "a member outside the experiment": ([*GOOD, member("other/summary/a.csv", BODY)], manifest(),
                                        ["other/: outside the experiment directory exp/"]),
    "an experiment named .": ([member("./summary/a.csv", BODY)], manifest(experiment="."),
                              ["'./summary/a.csv': a member name that has an empty, '.' or '..' part",
                               IN + "experiment name '.' is not allowed"]),
    "a hidden experiment": ([member(".exp/summary/a.csv", BODY)], manifest(experiment=".exp"),
                            [IN + "experiment name '.exp' is not allowed"]),
    "an experiment name ending in a newline": ([member("exp\n/summary/a.csv", BODY)], manifest(experiment="exp\n"),
                                               [IN + "experiment name 'exp\\n' is not allowed"]),
    "an experiment named like a flag": ([member("-exp/summary/a.csv", BODY)], manifest(experiment="-exp"),
                                        [IN + "experiment name '-exp' is not allowed"]),
    "an absolute manifest file name": (GOOD, manifest(files={"summary/a.csv": {"sha256": SHA, "bytes": 4},
                                                            "/etc/passwd": {"sha256": SHA, "bytes": 4}}),
                                       [IN + "files: '/etc/passwd' is absolute"]),
    "a manifest without code": (GOOD, manifest(code=...), [IN + "code is missing or not an object"]),
    "a manifest without an experiment": (GOOD, manifest(experiment=...),
                                         [IN + "experiment name None is not allowed"]),
    "a files entry that is not an object": (GOOD, manifest(files={"summary/a.csv": SHA}),
                                            [IN + "files: 'summary/a.csv' is not {sha256: 64 hex digits, bytes: "
                                                  "a whole number >= 0}"]),
    "files that are a list": (GOOD, manifest(files=["summary/a.csv"]),
                              [IN + "files is not an object (name -> {sha256, bytes})"]),
    "environments of the wrong shape": (GOOD, manifest(environments={"train": "x"}),
                                        [IN + "environments.train is not a list of {environment: "]),
    "packages that are not an object": (GOOD, manifest(environments={"train": [{"environment": {"packages": None}}]}),
                                        [IN + "environments.train is not a list of {environment: {packages: {...}}} "
                                              "objects"]),
    "a tarball name that climbs out": (GOOD, manifest(tarball="../../x.tar.gz"),
                                       [IN + "tarball '../../x.tar.gz' is not a file name "
                                        "beside the manifest"]),
    "a manifest that is not an object": (GOOD, b"[1, 2]", [IN + "is not a JSON object"]),
    "a manifest that is not JSON": (GOOD, b"{\"format\": ", ["MANIFEST.json inside exp.tar.gz is not valid JSON: "]),
}


def lines_of(err: str) -> list[str]:
    return [line.removeprefix("lorarank verify-archive: ") for line in err.strip().splitlines()]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_is_refused_one_line_per_problem(cli, tmp_path, case):
    members, doc, expected = HOSTILE[case]
    path = tarball(tmp_path / "exp.tar.gz", members, doc)
    before = sorted(os.listdir(tmp_path))
    code, out, err = cli("verify-archive", path)
    assert code == 1 and "Traceback" not in err, err
    got = lines_of(err)
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path.parent / "PWNED").exists()


def test_a_clean_tarball_of_the_same_shape_verifies(cli, tmp_path):
    # the hostile cases differ from this one in the one thing each attacks
    code, out, err = cli("verify-archive", tarball(tmp_path / "exp.tar.gz", GOOD, manifest()))
    assert code == 0 and "1 files match the manifest (exp, code not under git)" in out, err


def test_a_bomb_stops_at_its_header(cli, tmp_path):
    # a manifest member of 65 MiB of zeros: ~64 KB compressed, refused by its declared size before it is read
    bomb = tarball(tmp_path / "exp.tar.gz", GOOD, b" " * (verify_archive.MAX_MANIFEST + 1))
    assert bomb.stat().st_size < 1 << 20
    code, out, err = cli("verify-archive", bomb)
    assert code == 1 and lines_of(err) == [f"exp/MANIFEST.json: {verify_archive.MAX_MANIFEST + 1} bytes (allowed: at "
                                           f"most {verify_archive.MAX_MANIFEST})"]


def test_a_header_that_declares_gigabytes_is_refused_before_it_is_read(cli, tmp_path):
    # tarfile reads a whole PAX header at once: a 512-byte header declaring 8 GiB must not be read
    header = tarfile.TarInfo("exp/././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, (1 << 33) - 1  # the largest a ustar size field holds: 8 GiB
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 1024
    path = tmp_path / "exp.tar.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    code, out, err = cli("verify-archive", path)
    assert code == 1 and len(lines_of(err)) == 1 and "exp.tar.gz: corrupt (a header or read of" in err, err


def test_a_fifo_in_an_extracted_copy_is_refused_not_read(cli, tmp_path):
    tree = tmp_path / "exp"
    tree.mkdir()
    (tree / "a.csv").write_bytes(BODY)
    (tree / "MANIFEST.json").write_text(json.dumps(manifest(files={"a.csv": {"sha256": SHA, "bytes": 4}},
                                                            tarball=...)))
    os.mkfifo(tree / "pipe")  # hashing it would block forever
    code, out, err = cli("verify-archive", tree)
    assert code == 1 and lines_of(err) == ["pipe: not a regular file"]


def test_a_linked_side_manifest_is_refused(cli, tmp_path):
    path = tarball(tmp_path / "exp.tar.gz", GOOD, manifest())
    (tmp_path / "MANIFEST.json").symlink_to("/etc/passwd")
    code, out, err = cli("verify-archive", path)
    assert code == 1 and lines_of(err) == [f"{tmp_path / 'MANIFEST.json'}: a link or over {verify_archive.MAX_MANIFEST} "
                                           f"bytes (allowed: a regular file, at most that)"]


def test_member_count_and_bytes_are_capped_at_the_header(tmp_path):
    many = [member(f"exp/summary/{i}.csv", BODY) for i in range(5)]
    path = tarball(tmp_path / "exp.tar.gz", many, manifest())
    for limits in ({"max_members": 3}, {"max_bytes": 3 * len(BODY)}):
        doc, problems, n = verify_archive.verify_tarball(path, None, **limits)
        assert doc is None and n == 0 and len(problems) == 1 and "a decompression bomb?" in problems[0], problems


def test_the_caps_are_the_readmes_and_hold_at_their_boundary(tmp_path):
    """README: refused "at the tar header before any data is read, more than a million members or 1 TiB": the
    caps verify-archive applies are those (the command passes none: the defaults), and an archive at a cap is
    accepted, one member or one byte over it refused."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(verify_archive.verify_tarball).parameters.items()
                if v.default is not inspect.Parameter.empty}
    assert defaults == {"max_members": 1_000_000, "max_bytes": 2 ** 40}
    assert verify_archive.MAX_MANIFEST == 64 * 2 ** 20  # README: a manifest "over 64 MiB"
    files = {f"summary/{i}.csv": {"sha256": SHA, "bytes": len(BODY)} for i in range(5)}
    doc = manifest(files=files)
    path = tarball(tmp_path / "exp.tar.gz", [member(f"exp/{name}", BODY) for name in files], doc)
    members = len(files) + 1  # the manifest is a member too
    total = len(files) * len(BODY) + len(json.dumps(doc).encode())
    for limits, ok in (({"max_members": members}, True), ({"max_members": members - 1}, False),
                       ({"max_bytes": total}, True), ({"max_bytes": total - 1}, False)):
        got, problems, n = verify_archive.verify_tarball(path, None, **limits)
        if ok:
            assert problems == [] and n == len(files), (limits, problems)
        else:
            assert got is None and n == 0 and len(problems) == 1 and "a decompression bomb?" in problems[0], limits


def test_a_manifest_of_exactly_64_mib_is_read_one_byte_more_is_not(cli, tmp_path):
    raw = json.dumps(manifest()).encode()
    at_cap = raw + b" " * (64 * 2 ** 20 - len(raw))  # valid JSON, padded with whitespace to the cap
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert cli("verify-archive", tarball(tmp_path / "a/exp.tar.gz", GOOD, at_cap))[0] == 0
    code, _, err = cli("verify-archive", tarball(tmp_path / "b/exp.tar.gz", GOOD, at_cap + b" "))
    assert code == 1 and lines_of(err) == [f"exp/MANIFEST.json: {64 * 2 ** 20 + 1} bytes (allowed: at most "
                                           f"{64 * 2 ** 20})"]


def test_an_extracted_copy_with_a_link_is_refused(cli, tmp_path):
    tree = tmp_path / "exp"
    (tree / "summary").mkdir(parents=True)
    (tree / "summary/a.csv").write_bytes(BODY)
    (tree / "MANIFEST.json").write_text(json.dumps(manifest(tarball=...)))
    assert cli("verify-archive", tree)[0] == 0
    (tree / "summary/passwd").symlink_to("/etc/passwd")
    (tree / "outside").symlink_to(tmp_path, target_is_directory=True)
    code, out, err = cli("verify-archive", tree)
    assert code == 1 and sorted(lines_of(err)) == ["outside: a link (allowed: regular files)",
                                                  "summary/passwd: a link (allowed: regular files)"]


def test_an_archive_of_results_named_dot_dot_is_refused(cli, tmp_path):
    (tmp_path / "results/exp/summary").mkdir(parents=True)
    (tmp_path / "results/exp/summary/a.csv").write_bytes(BODY)
    out = tmp_path / "archive"
    code, _, err = cli("archive", "--results", tmp_path / "results/exp/summary/..", "--inputs",
                       tmp_path / "results/exp/summary", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "experiment name '..' is not allowed" in err, err
    assert not out.exists()
