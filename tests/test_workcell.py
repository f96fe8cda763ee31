"""Workcells on real git repositories and plain directories (no mocks of our code)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cyntra.clock import VirtualClock, parse_ts, use_clock
from cyntra.errors import InputError
from cyntra.workcell import (
    MARKER_NAME,
    MergeConflictError,
    WorkcellError,
    WorkcellManager,
    sanitize_issue_id,
    workcell_id,
)

IDENT = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]


def git(cwd: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *IDENT, *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"git {args} failed: {result.stderr}")
    return result.stdout


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No global/system git config: the manager must supply its own identity defaults."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "README.md").write_text("hello\nworld\n")
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("x = 1\ny = 2\n")
    (ws / ".beads").mkdir()
    (ws / ".beads" / "issues.jsonl").write_text('{"id": "1", "title": "t"}\n')
    (ws / ".cyntra").mkdir()
    (ws / ".cyntra" / "config.yaml").write_text("version: '1.0'\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "init")
    return ws


def head(ws: Path, ref: str = "HEAD") -> str:
    return git(ws, "rev-parse", ref).strip()


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "bad",
    ["../../x", "a/b", "", "..", ".", "-rf", ".hidden", "a\\b", "a\x00b", "a b", "a..b",
     "x.lock", "x" * 65, "ü"],
)
def test_bad_issue_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InputError) as info:
        sanitize_issue_id(bad)
    assert info.value.field == "issue_id"
    assert info.value.reason


@pytest.mark.parametrize("good", ["1", "ISSUE-12.3_x", "x" * 64, "a.b"])
def test_good_issue_ids_pass_unchanged(good: str) -> None:
    assert sanitize_issue_id(good) == good


def test_traversal_error_names_the_reason() -> None:
    with pytest.raises(InputError, match="path traversal"):
        sanitize_issue_id("../../x")


def test_workcell_id_format() -> None:
    ts = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert workcell_id("42", ts) == "wc-42-20250102T030405000006"
    assert workcell_id("42", ts, "codex") == "wc-42-20250102T030405000006-codex"
    with pytest.raises(InputError) as info:
        workcell_id("42", ts, "../x")
    assert info.value.field == "tag"


# ---------------------------------------------------------------- git backend


def test_git_worktree_created_with_marker_and_real_branch(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    assert mgr.backend == "git"
    wc = mgr.create("1", tag="codex")

    assert re.fullmatch(r"wc-1-\d{8}T\d{12}-codex", wc.id)
    assert wc.branch == wc.id
    assert wc.path == repo / ".cyntra" / "workcells" / wc.id
    assert wc.base_commit == head(repo)
    assert git(repo, "branch", "--list", wc.id).strip().endswith(wc.id)
    assert str(wc.path) in git(repo, "worktree", "list")
    assert head(wc.path) == wc.base_commit
    assert git(wc.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == wc.id

    marker = json.loads((wc.path / MARKER_NAME).read_text())
    assert marker == {
        "workcell_id": wc.id, "issue_id": "1", "created": marker["created"],
        "base_commit": wc.base_commit, "branch": wc.id, "backend": "git",
    }
    assert parse_ts(marker["created"]) == wc.created
    assert wc.logs_dir.is_dir()
    assert (wc.path / "README.md").read_text() == "hello\nworld\n"
    # The kernel's own state never appears inside a worktree...
    assert not (wc.path / ".beads").exists()
    assert not (wc.path / ".cyntra").exists()
    # ...its absence is not a change...
    assert mgr.diff_stats(wc) == ([], 0)
    # ...and the main work tree stays clean (workcells are excluded from its status).
    assert git(repo, "status", "--porcelain") == ""


def test_diff_stats_counts_committed_and_uncommitted_changes(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("7")
    (wc.path / "src" / "app.py").write_text("x = 1\ny = 3\nz = 4\n")  # 1 deleted, 2 added
    git(wc.path, "commit", "-q", "-am", "agent edit")
    (wc.path / "new.txt").write_text("a\nb\nc\n")  # 3 added, uncommitted
    (wc.path / "README.md").unlink()  # 2 deleted
    # Kernel artifacts in the workcell are not part of the patch.
    (wc.path / "proof.json").write_text("{}\n")
    (wc.logs_dir / "codex-stdout.log").write_text("lots\nof\nlog\n")

    files, lines = mgr.diff_stats(wc)
    assert sorted(files, key=lambda f: f["path"]) == [
        {"path": "README.md", "kind": "deleted"},
        {"path": "new.txt", "kind": "added"},
        {"path": "src/app.py", "kind": "modified"},
    ]
    assert lines == 3 + 3 + 2


def test_commit_and_merge_use_the_real_branch(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("1", tag="claude")
    assert mgr.commit_all(wc, "nothing yet") is None  # nothing changed: nothing to merge

    (wc.path / "feature.py").write_text("def f():\n    return 1\n")
    (wc.path / "telemetry.jsonl").write_text('{"type": "started"}\n')
    (wc.logs_dir / "claude-stdout.log").write_text("out\n")
    branch_head = mgr.commit_all(wc, "add feature")
    assert branch_head is not None and branch_head == head(wc.path)
    assert git(wc.path, "show", "--name-only", "--format=", "HEAD").split() == ["feature.py"]

    main_before = head(repo)
    merged = mgr.merge(wc)
    assert merged == head(repo) != main_before
    parents = git(repo, "log", "-1", "--format=%P").split()
    assert parents == [main_before, branch_head]  # --no-ff merge of the workcell's branch
    assert wc.id in git(repo, "log", "-1", "--format=%s")
    assert wc.id in git(repo, "branch", "--merged", "main")
    assert (repo / "feature.py").read_text() == "def f():\n    return 1\n"
    # Kernel files never reach main, and the issue store is untouched.
    assert not (repo / "telemetry.jsonl").exists()
    assert not (repo / "logs").exists()
    assert not (repo / MARKER_NAME).exists()
    assert (repo / ".beads" / "issues.jsonl").read_text() == '{"id": "1", "title": "t"}\n'
    assert git(repo, "status", "--porcelain") == ""


def test_agent_committing_kernel_files_is_scrubbed_before_merge(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("3")
    (wc.path / "work.txt").write_text("done\n")
    (wc.path / "manifest.json").write_text("{}\n")
    (wc.logs_dir / "x.log").write_text("log\n")
    git(wc.path, "add", "-A")  # an agent that commits everything, kernel files included
    git(wc.path, "commit", "-q", "-m", "agent commits all")

    mgr.merge(wc)
    tracked = git(repo, "ls-files").split()
    assert "work.txt" in tracked
    assert not {"manifest.json", "logs/x.log", MARKER_NAME} & set(tracked)
    assert ".beads/issues.jsonl" in tracked and ".cyntra/config.yaml" in tracked


def test_merge_conflict_aborts_and_leaves_main_clean(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("5")
    (wc.path / "README.md").write_text("from the workcell\n")
    mgr.commit_all(wc, "workcell edit")
    (repo / "README.md").write_text("from main\n")
    git(repo, "commit", "-q", "-am", "main edit")
    main_before = head(repo)

    with pytest.raises(MergeConflictError) as info:
        mgr.merge(wc)
    assert info.value.conflicted == ["README.md"]
    assert "aborted" in str(info.value) and wc.id in str(info.value)
    assert head(repo) == main_before
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert (repo / "README.md").read_text() == "from main\n"


def test_merge_into_a_branch_that_is_not_checked_out_is_refused(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("5")
    (wc.path / "a.txt").write_text("a\n")
    with pytest.raises(WorkcellError, match="checked out"):
        mgr.merge(wc, into="release")


def test_archive_then_cleanup_removes_worktree_and_branch(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("9", tag="opencode")
    (wc.path / "manifest.json").write_text('{"workcell_id": "x"}\n')
    (wc.path / "proof.json").write_text('{"status": "failed"}\n')
    (wc.path / "telemetry.jsonl").write_text('{"type": "started"}\n')
    (wc.logs_dir / "opencode-stdout.log").write_text("out\n")
    (wc.path / "change.txt").write_text("candidate patch\n")
    gate_log = repo.parent / "test-gate.log"
    gate_log.write_text("1 failed\n")

    dest = mgr.archive(wc, extra_files={"gates/test.log": gate_log}, loser=True)
    assert dest == repo / ".cyntra" / "archives" / wc.id
    for name in ("manifest.json", "proof.json", "telemetry.jsonl", "logs/opencode-stdout.log",
                 "gates/test.log", "workcell.json", "patch.diff"):
        assert (dest / name).is_file(), name
    assert not (dest / "rollout.json").exists()
    assert "change.txt" in (dest / "patch.diff").read_text()
    meta = json.loads((dest / "archive_meta.json").read_text())
    assert meta["loser"] is True and meta["workcell_id"] == wc.id and meta["issue_id"] == "9"
    parse_ts(meta["archived_at"])
    assert [p.name for p in dest.parent.iterdir()] == [wc.id]  # no temp dir left behind

    # Re-archiving replaces the earlier archive.
    (wc.path / "rollout.json").write_text("{}\n")
    mgr.archive(wc, loser=False)
    assert (dest / "rollout.json").is_file()
    assert json.loads((dest / "archive_meta.json").read_text())["loser"] is False

    mgr.cleanup(wc)
    assert not wc.path.exists()
    assert git(repo, "branch", "--list", wc.id) == ""
    assert str(wc.path) not in git(repo, "worktree", "list")
    assert mgr.list_active() == []
    assert mgr.list_archived() == [wc.id]


def test_archive_refuses_extra_files_outside_the_archive(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc = mgr.create("9")
    src = repo / "README.md"
    for bad in ("../evil", "/abs", "archive_meta.json"):
        with pytest.raises(InputError):
            mgr.archive(wc, extra_files={bad: src})
    assert mgr.list_archived() == []


def test_list_active_find_stale_and_prune(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    wc1 = mgr.create("1")
    wc2 = mgr.create("2")
    broken = mgr.root / "wc-broken"
    broken.mkdir()
    (broken / MARKER_NAME).write_text("{not json")

    active = WorkcellManager(repo).list_active()  # a fresh manager (as after a restart)
    assert [w.id for w in active] == sorted([wc1.id, wc2.id])
    assert active[0] == (wc1 if wc1.id < wc2.id else wc2)
    assert [w.id for w in mgr.find_stale({"1"})] == [wc2.id]

    import shutil

    shutil.rmtree(wc2.path)  # deleted behind git's back
    assert str(wc2.path) in git(repo, "worktree", "list")
    mgr.prune()
    assert str(wc2.path) not in git(repo, "worktree", "list")


def test_bad_issue_id_touches_nothing(repo: Path) -> None:
    mgr = WorkcellManager(repo)
    for bad in ("../../x", "a/b", "", ".."):
        with pytest.raises(InputError):
            mgr.create(bad)
    assert not (repo / ".cyntra" / "workcells").exists() or mgr.list_active() == []
    assert not (repo.parent / "x").exists()
    assert git(repo, "branch", "--list").split() == ["*", "main"]


def test_same_timestamp_gets_distinct_ids(repo: Path) -> None:
    frozen = VirtualClock(datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    with use_clock(frozen):
        mgr = WorkcellManager(repo)
        a = mgr.create("1")
        b = mgr.create("1")
    assert a.id == "wc-1-20250601T120000000000"
    assert b.id == "wc-1-20250601T120000000000-2"
    assert a.created == b.created == frozen.now()


# ---------------------------------------------------------------- backend selection


def test_auto_backend_needs_a_commit(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert WorkcellManager(empty).backend == "directory"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert WorkcellManager(plain).backend == "directory"
    with pytest.raises(WorkcellError, match="git work tree"):
        WorkcellManager(plain, backend="git")


# ---------------------------------------------------------------- directory backend


def test_directory_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "plain"
    ws.mkdir()
    mgr = WorkcellManager(ws, backend="directory")

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("the directory backend must not start processes")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    made = [mgr.create(str(i % 7), tag="sim") for i in range(200)]
    assert len({w.id for w in made}) == 200
    wc = made[0]
    assert wc.backend == "directory" and wc.branch is None and wc.base_commit is None
    assert json.loads((wc.path / MARKER_NAME).read_text())["backend"] == "directory"

    (wc.path / "out.txt").write_text("a\nb\n")
    (wc.path / "pkg").mkdir()
    (wc.path / "pkg" / "mod.py").write_text("x = 1")  # no trailing newline: still 1 line
    (wc.path / "proof.json").write_text("{}\n")
    (wc.logs_dir / "sim-stdout.log").write_text("x\n")
    assert mgr.diff_stats(wc) == (
        [{"path": "out.txt", "kind": "added"}, {"path": "pkg/mod.py", "kind": "added"}], 3
    )
    assert mgr.commit_all(wc, "msg") is None
    with pytest.raises(WorkcellError):
        mgr.merge(wc)

    dest = mgr.archive(wc, loser=True)
    assert json.loads((dest / "archive_meta.json").read_text())["loser"] is True
    assert (dest / "proof.json").is_file() and (dest / "logs" / "sim-stdout.log").is_file()
    assert not (dest / "patch.diff").exists()
    mgr.cleanup(wc)
    assert not wc.path.exists()
    assert len(mgr.list_active()) == 199
    assert [w.id for w in mgr.find_stale({"0", "1", "2", "3", "4", "5"})] == sorted(
        w.id for w in made[1:] if w.issue_id == "6"
    )


def _walk_changes(root: Path) -> tuple[list[dict[str, str]], int]:
    """The reference: what ``os.walk`` (top-down, sorted, links not followed) finds."""
    from cyntra.workcell.manager import RESERVED_NAMES

    changes, lines = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in RESERVED_NAMES]
            filenames = [f for f in filenames if f not in RESERVED_NAMES]
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink():
                continue
            changes.append({"path": (rel_dir / name).as_posix(), "kind": "added"})
            data = full.read_bytes()
            lines += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return changes, lines


def test_directory_diff_stats_walk_like_os_walk(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    wc = WorkcellManager(ws, backend="directory").create("1")
    root = wc.path
    (root / "b.txt").write_text("1\n2\n3")
    (root / "a").mkdir()
    (root / "a" / "z.py").write_text("")
    (root / "a" / "proof.json").write_text("{}\n")  # reserved only at the top
    (root / "a" / "deeper" / "x").mkdir(parents=True)
    (root / "a" / "deeper" / "x" / "y").write_text("y\n")
    (root / "a" / "deeper" / "m").write_text("m")
    (root / "a0").write_text("\n\n")
    (root / "link.txt").symlink_to(root / "b.txt")
    (root / "linkdir").symlink_to(root / "a", target_is_directory=True)
    (root / "broken").symlink_to(root / "nowhere")
    (root / "manifest.json").write_text("{}\n")
    (root / "logs" / "out.log").write_text("ignored\n")
    got = WorkcellManager(ws, backend="directory").diff_stats(wc)
    assert got == _walk_changes(root)
    assert [c["path"] for c in got[0]] == ["a0", "b.txt", "a/proof.json", "a/z.py", "a/deeper/m", "a/deeper/x/y"]


def test_directory_diff_stats_walk_any_depth_without_recursion(tmp_path: Path) -> None:
    import sys

    ws = tmp_path / "ws"
    ws.mkdir()
    mgr = WorkcellManager(ws, backend="directory")
    wc = mgr.create("1")
    deep = wc.path.joinpath(*(["d"] * 300))
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_text("x\n")
    (wc.path / "top.txt").write_text("y\n")

    def frames() -> int:
        f, n = sys._getframe(), 0
        while f is not None:
            f, n = f.f_back, n + 1  # type: ignore[assignment]
        return n

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames() + 100)  # a walk that recursed per level would fail
    try:
        changes, lines = mgr.diff_stats(wc)
    finally:
        sys.setrecursionlimit(limit)
    assert [c["path"] for c in changes] == ["top.txt", "d/" * 300 + "leaf.txt"] and lines == 2


def test_archive_and_remove_returns_the_meta_and_keeps_the_marker_as_workcell_json(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    mgr = WorkcellManager(ws, backend="directory")
    wc = mgr.create("1")
    marker = json.loads((wc.path / MARKER_NAME).read_text())
    archived = mgr.archive_and_remove(wc, loser=True)
    assert json.loads((archived.path / "archive_meta.json").read_text()) == archived.meta
    assert archived.meta["loser"] is True and "workcell.json" in archived.meta["files"]
    assert json.loads((archived.path / "workcell.json").read_text()) == marker
    assert not (archived.path / MARKER_NAME).exists() and not wc.path.exists()

    lost = mgr.create("2")
    (lost.path / MARKER_NAME).unlink()  # a marker gone missing: workcell.json is written afresh
    archived = mgr.archive_and_remove(lost)
    assert json.loads((archived.path / "workcell.json").read_text())["workcell_id"] == lost.id

    again = mgr.create("1")  # same id as an existing archive: it is replaced, through a copy
    again_id = again.id
    (mgr.archive_root / again_id).mkdir(parents=True, exist_ok=True)
    archived = mgr.archive_and_remove(again)
    assert archived.path == mgr.archive_root / again_id and archived.meta["workcell_id"] == again_id
    assert json.loads((archived.path / "archive_meta.json").read_text()) == archived.meta
