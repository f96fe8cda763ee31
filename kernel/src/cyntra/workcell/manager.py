"""Workcells: one isolated working copy per candidate run, created, diffed, merged, archived, removed.

Two backends:

* ``git`` — a ``git worktree`` on its own branch (branch name = workcell id) under
  ``<workspace>/.cyntra/workcells/<workcell_id>/``. The kernel's own files (``.beads/``,
  ``.cyntra/``) are removed from the worktree and flagged ``skip-worktree`` so an agent never sees
  or edits the issue store, and their absence is never committed.
* ``directory`` — a plain directory with the same layout and no repository operations; used for
  non-git workspaces and by the simulator, which creates tens of thousands of them (no subprocess).

The kernel writes its artifacts into the workcell root (``manifest.json``, ``proof.json``,
``telemetry.jsonl``, ``rollout.json``, the marker file and ``logs/``). These top-level names are
*reserved*: whatever an agent stages or commits under them is reset to the base commit before the
workcell's final commit, so they never reach the merged branch.

Git is always run with argv lists (never a shell). Operations that touch the shared repository
(worktree add/remove, branch delete, merge) hold a file lock so concurrent candidates do not race.
All methods are synchronous: an asyncio caller should run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple, TypedDict

import structlog

from cyntra import clock
from cyntra.errors import CyntraError, InputError
from cyntra.fsutil import dumps_file, file_lock
from cyntra.workcell.ids import sanitize_issue_id, workcell_id

log = structlog.get_logger(__name__)

Backend = Literal["git", "directory"]
BackendChoice = Literal["auto", "git", "directory"]
ChangeKind = Literal["added", "modified", "deleted"]

MARKER_NAME = ".cyntra-workcell.json"
LOGS_DIRNAME = "logs"
ARTIFACT_FILES = ("manifest.json", "proof.json", "telemetry.jsonl", "rollout.json")
KERNEL_DIRS = (".beads", ".cyntra")
# Top-level names in a workcell that belong to the kernel, never to the agent's patch.
RESERVED_NAMES = (MARKER_NAME, LOGS_DIRNAME, *ARTIFACT_FILES, *KERNEL_DIRS)
ARCHIVE_META = "archive_meta.json"
_KINDS: dict[str, ChangeKind] = {"A": "added", "D": "deleted"}

_DEFAULT_NAME = "Cyntra Kernel"
_DEFAULT_EMAIL = "cyntra@localhost"


class WorkcellError(CyntraError):
    """A workcell operation failed (git refused, files missing); the message says which and why."""


class MergeConflictError(WorkcellError):
    """The merge conflicted; it was aborted and the target branch is unchanged."""

    def __init__(self, message: str, conflicted: list[str]) -> None:
        super().__init__(message)
        self.conflicted = conflicted


class FileChange(TypedDict):
    path: str
    kind: ChangeKind


@dataclass(frozen=True)
class Workcell:
    """One workcell; ``branch``/``base_commit`` are None for the directory backend."""

    id: str
    issue_id: str
    path: Path
    backend: Backend
    created: datetime
    branch: str | None = None
    base_commit: str | None = None

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIRNAME

    @property
    def marker_path(self) -> Path:
        return self.path / MARKER_NAME

    def to_marker(self) -> dict[str, Any]:
        return {
            "workcell_id": self.id,
            "issue_id": self.issue_id,
            "created": clock.isoformat_z(self.created),
            "base_commit": self.base_commit,
            "branch": self.branch,
            "backend": self.backend,
        }

    @classmethod
    def from_marker(cls, data: dict[str, Any], path: Path) -> Workcell:
        """Rebuild from a marker file; the path is where the marker was found (not stored)."""
        backend = data.get("backend")
        if backend not in ("git", "directory"):
            raise InputError(path / MARKER_NAME, f"unknown backend {backend!r}", field="backend")
        for key in ("workcell_id", "issue_id", "created"):
            if not isinstance(data.get(key), str):
                raise InputError(path / MARKER_NAME, "missing or not a string", field=key)
        return cls(
            id=data["workcell_id"],
            issue_id=data["issue_id"],
            path=path,
            backend=backend,
            created=clock.parse_ts(data["created"]),
            branch=data.get("branch"),
            base_commit=data.get("base_commit"),
        )


class Archived(NamedTuple):
    """An archived workcell: where it is and the ``archive_meta.json`` written into it."""

    path: Path
    meta: dict[str, Any]


class WorkcellManager:
    """Creates and tears down the workcells of one workspace."""

    def __init__(self, workspace: Path, backend: BackendChoice = "auto") -> None:
        self.workspace = Path(workspace).resolve()
        self.root = self.workspace / ".cyntra" / "workcells"
        self.archive_root = self.workspace / ".cyntra" / "archives"
        self._identity: list[str] | None = None
        self._root_ready = False
        if backend == "auto":
            self.backend: Backend = "git" if self._is_git_workspace() else "directory"
        elif backend == "git":
            if not self._is_git_workspace():
                raise WorkcellError(
                    f"{self.workspace}: backend 'git' needs the root of a git work tree "
                    "with at least one commit"
                )
            self.backend = "git"
        elif backend == "directory":
            self.backend = "directory"
        else:
            raise InputError(None, f"unknown workcell backend {backend!r}", field="workcells.backend")

    # ------------------------------------------------------------------ create

    def create(self, issue_id: str, tag: str | None = None) -> Workcell:
        """Create a fresh workcell for ``issue_id`` (sanitised; a bad id raises InputError)."""
        safe_issue = sanitize_issue_id(issue_id)
        created = clock.now()
        base_id = workcell_id(safe_issue, created, tag)
        self._ensure_root()
        if self.backend == "directory":
            return self._create_directory(safe_issue, base_id, created)
        return self._create_git(safe_issue, base_id, created)

    def _create_directory(self, issue_id: str, base_id: str, created: datetime) -> Workcell:
        wc_id, n = base_id, 2
        while True:
            path = self.root / wc_id
            try:
                path.mkdir()  # exclusive claim of the id, no race between concurrent creators
                break
            except FileExistsError:
                wc_id, n = f"{base_id}-{n}", n + 1
        wc = Workcell(wc_id, issue_id, path, "directory", created)
        wc.logs_dir.mkdir()
        _write_marker(wc)
        return wc

    def _create_git(self, issue_id: str, base_id: str, created: datetime) -> Workcell:
        with self._repo_lock():
            wc_id, n = base_id, 2
            while (self.root / wc_id).exists() or self._branch_exists(wc_id):
                wc_id, n = f"{base_id}-{n}", n + 1
            path = self.root / wc_id
            base = self._git(["rev-parse", "HEAD"], self.workspace).stdout.strip()
            self._git(["worktree", "add", "-q", "-b", wc_id, str(path), base], self.workspace)
        wc = Workcell(wc_id, issue_id, path, "git", created, branch=wc_id, base_commit=base)
        try:
            self._hide_kernel_dirs(wc)
            wc.logs_dir.mkdir(exist_ok=True)
            _write_marker(wc)
        except BaseException:
            with contextlib.suppress(Exception):
                self.cleanup(wc)
            raise
        return wc

    def _hide_kernel_dirs(self, wc: Workcell) -> None:
        """Remove ``.beads/``/``.cyntra/`` from the worktree without ever committing their removal."""
        tracked = self._git(["ls-files", "-z", "--", *KERNEL_DIRS], wc.path).stdout
        if tracked:
            self._git(["update-index", "-z", "--skip-worktree", "--stdin"], wc.path, input=tracked)
        for name in KERNEL_DIRS:
            target = wc.path / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)

    # ------------------------------------------------------------------ inspect

    def diff_stats(self, wc: Workcell) -> tuple[list[FileChange], int]:
        """Files the candidate changed vs its base (committed + uncommitted) and added+deleted lines."""
        if wc.backend == "directory":
            return _directory_changes(wc.path)
        base = self._require_base(wc)
        self._stage(wc)
        out = self._git(["diff", "--cached", "--no-renames", "-z", "--numstat", base], wc.path).stdout
        lines = sum(added + deleted for added, deleted in _numstat_records(out))
        status = self._git(
            ["diff", "--cached", "--no-renames", "-z", "--name-status", base], wc.path
        ).stdout
        parts = status.split("\0")
        changes: list[FileChange] = []
        for i in range(0, len(parts) - 1, 2):
            code, path = parts[i], parts[i + 1]
            if not code:
                continue
            kind = _KINDS.get(code[0], "modified")
            changes.append({"path": path, "kind": kind})
        return changes, lines

    def list_active(self) -> list[Workcell]:
        """Every workcell that still has a directory and a readable marker, by id."""
        if not self.root.is_dir():
            return []
        found: list[Workcell] = []
        for entry in sorted(self.root.iterdir()):
            marker = entry / MARKER_NAME
            if not entry.is_dir() or not marker.is_file():
                continue
            try:
                data = json.loads(marker.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise InputError(marker, "marker is not a JSON object")
                found.append(Workcell.from_marker(data, entry))
            except (OSError, ValueError, InputError) as exc:
                log.warning("workcell_marker_unreadable", path=str(marker), error=str(exc))
        return found

    def list_unfinished(self) -> list[Path]:
        """Workcell directories without a marker: a kernel killed between creating the directory
        (or git worktree) and writing the marker. No agent ran in them (the marker comes first).
        A directory with archive metadata lost its marker mid-archive and holds an agent's work:
        it is not listed (left as it is, as before)."""
        if not self.root.is_dir():
            return []
        return [entry for entry in sorted(self.root.iterdir())
                if entry.is_dir() and entry.name.startswith("wc-") and not (entry / MARKER_NAME).exists()
                and not (entry / ARCHIVE_META).exists()]

    def remove_unfinished(self, path: Path) -> None:
        """Remove an unfinished workcell: its worktree and branch (named after it) for git."""
        if self.backend == "directory":
            shutil.rmtree(path, ignore_errors=True)
            return
        with self._repo_lock():
            self._git(["worktree", "remove", "--force", "--force", str(path)], self.workspace, check=False)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            self._git(["worktree", "prune"], self.workspace, check=False)
            if self._branch_exists(path.name):
                self._git(["branch", "-D", "-q", path.name], self.workspace, check=False)

    def list_archived(self) -> list[str]:
        """Ids of archived workcells (temp dirs of an interrupted archive are skipped)."""
        if not self.archive_root.is_dir():
            return []
        return sorted(
            p.name for p in self.archive_root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def find_stale(self, active_issue_ids: set[str]) -> list[Workcell]:
        """Workcells whose issue is not being run any more (left behind by a killed kernel)."""
        return [wc for wc in self.list_active() if wc.issue_id not in active_issue_ids]

    # ------------------------------------------------------------------ commit / merge

    def commit_all(self, wc: Workcell, message: str) -> str | None:
        """Commit everything the candidate left (minus reserved names).

        Returns the branch head when the branch differs from its base, else None (nothing to
        merge). Directory workcells have no history: always None.
        """
        if wc.backend == "directory":
            return None
        base = self._require_base(wc)
        self._stage(wc)
        dirty = self._git(["diff", "--cached", "--quiet", "HEAD"], wc.path, check=False)
        if dirty.returncode == 1:
            self._git(
                [*self._author(), "commit", "-q", "--no-verify", "--allow-empty-message", "-m", message],
                wc.path,
            )
        elif dirty.returncode != 0:
            raise WorkcellError(f"git diff failed in {wc.path}: {dirty.stderr.strip()}")
        head = self._git(["rev-parse", "HEAD"], wc.path).stdout.strip()
        return None if head == base else head

    def merge(self, wc: Workcell, into: str | None = None) -> str:
        """Merge the workcell's real branch (``--no-ff``) into ``into`` (default: the workspace's
        current branch, which must be checked out). Uncommitted work is committed first.

        A conflict aborts the merge and raises MergeConflictError; the target stays clean.
        Returns the target's new head commit.
        """
        if wc.backend != "git" or not wc.branch:
            raise WorkcellError(f"{wc.id}: only git workcells can be merged (backend {wc.backend})")
        self.commit_all(wc, f"cyntra: changes of {wc.id}")
        with self._repo_lock():
            current = self._git(
                ["symbolic-ref", "--quiet", "--short", "HEAD"], self.workspace, check=False
            ).stdout.strip()
            target = into or current
            if not current or target != current:
                raise WorkcellError(
                    f"cannot merge {wc.branch} into {target!r}: the workspace has "
                    f"{current or 'a detached HEAD'} checked out"
                )
            message = f"Merge workcell {wc.id} (issue {wc.issue_id})"
            result = self._git(
                [*self._author(), "merge", "--no-ff", "--no-edit", "-m", message, wc.branch],
                self.workspace,
                check=False,
            )
            if result.returncode != 0:
                conflicted = self._git(
                    ["diff", "--name-only", "--diff-filter=U", "-z"], self.workspace, check=False
                ).stdout
                files = [f for f in conflicted.split("\0") if f]
                in_progress = self._git(
                    ["rev-parse", "-q", "--verify", "MERGE_HEAD"], self.workspace, check=False
                )
                if in_progress.returncode == 0:
                    self._git(["merge", "--abort"], self.workspace)
                detail = (result.stdout + result.stderr).strip()
                if files:
                    raise MergeConflictError(
                        f"merge of {wc.branch} into {target} conflicted in {', '.join(files)}; "
                        f"the merge was aborted and {target} is unchanged",
                        files,
                    )
                raise WorkcellError(f"merge of {wc.branch} into {target} failed: {detail}")
            return self._git(["rev-parse", "HEAD"], self.workspace).stdout.strip()

    # ------------------------------------------------------------------ archive / cleanup

    def archive(
        self,
        wc: Workcell,
        extra_files: dict[str, Path] | None = None,
        loser: bool = False,
    ) -> Path:
        """Copy the workcell's artifacts into its archive directory (see :meth:`_archive`)."""
        return self._archive(wc, extra_files, loser).path

    def _archive(self, wc: Workcell, extra_files: dict[str, Path] | None, loser: bool) -> Archived:
        """Copy the workcell's artifacts into ``.cyntra/archives/<workcell_id>/``.

        Atomic: everything is assembled in a temp dir beside it and renamed into place, so a
        reader (or a crash) sees the whole archive or none of it. No per-file fsync (the
        simulator archives tens of thousands of workcells).

        Copied: manifest.json, proof.json, telemetry.jsonl, rollout.json (when present), logs/,
        the marker (as ``workcell.json``), ``patch.diff`` for git workcells, and ``extra_files``
        (archive-relative name -> source). ``archive_meta.json`` records the loser mark.
        Re-archiving a workcell replaces its earlier archive.
        """
        self.archive_root.mkdir(parents=True, exist_ok=True)
        dest = self.archive_root / wc.id
        tmp = Path(tempfile.mkdtemp(prefix=f".{wc.id}.", suffix=".tmp", dir=self.archive_root))
        tmp.chmod(0o755)
        try:
            copied: list[str] = []
            for name in ARTIFACT_FILES:
                src = wc.path / name
                if src.is_file() and not src.is_symlink():
                    shutil.copy2(src, tmp / name, follow_symlinks=False)
                    copied.append(name)
            if wc.logs_dir.is_dir():
                shutil.copytree(wc.logs_dir, tmp / LOGS_DIRNAME, symlinks=True)
                copied.append(LOGS_DIRNAME + "/")
            (tmp / "workcell.json").write_text(dumps_file(wc.to_marker()), encoding="utf-8")
            copied.append("workcell.json")
            if wc.backend == "git" and wc.path.is_dir():
                patch = self._patch(wc)
                if patch is not None:
                    (tmp / "patch.diff").write_text(patch, encoding="utf-8")
                    copied.append("patch.diff")
            for name, src in sorted((extra_files or {}).items()):
                rel = _archive_relpath(name)
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if Path(src).is_dir():
                    shutil.copytree(src, target, symlinks=True)
                else:
                    shutil.copy2(src, target)
                copied.append(rel)
            meta = _write_archive_meta(tmp, wc, loser, copied)
            old: Path | None = None
            if dest.exists():
                old = dest.with_name(f".{wc.id}.old-{os.getpid()}-{tmp.name}")
                os.rename(dest, old)
            os.rename(tmp, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Archived(dest, meta)

    def archive_and_remove(self, wc: Workcell, loser: bool = False) -> Archived:
        """Archive the workcell and remove it; returns the archive and its ``archive_meta.json``.

        A plain-directory workcell is *moved* into the archive (one atomic rename, no copy): its
        whole tree — artifacts, logs and what the toolchain wrote — becomes the archive. Git
        workcells are copied (with ``patch.diff``) and the worktree and branch are removed.
        """
        if wc.backend != "directory" or not wc.path.is_dir():
            archived = self._archive(wc, None, loser)
            self.cleanup(wc)
            return archived
        self.archive_root.mkdir(parents=True, exist_ok=True)
        dest = self.archive_root / wc.id
        if dest.exists():  # re-archiving replaces, as archive() does
            archived = self._archive(wc, None, loser)
            self.cleanup(wc)
            return archived
        with os.scandir(wc.path) as entries:  # names and types from one directory read
            files = sorted(e.name + ("/" if e.is_dir() else "") for e in entries if e.name != MARKER_NAME)
        meta = _write_archive_meta(wc.path, wc, loser, [*files, "workcell.json"])
        try:  # the marker becomes the archive's workcell.json: no longer an active workcell
            os.replace(wc.path / MARKER_NAME, wc.path / "workcell.json")
        except FileNotFoundError:
            (wc.path / "workcell.json").write_text(dumps_file(wc.to_marker()), encoding="utf-8")
        os.rename(wc.path, dest)
        return Archived(dest, meta)

    def cleanup(self, wc: Workcell) -> None:
        """Remove the workcell: worktree + branch for git, the directory otherwise."""
        if wc.backend == "directory":
            if wc.path.exists():
                shutil.rmtree(wc.path)
            return
        with self._repo_lock():
            if wc.path.exists():
                removed = self._git(
                    ["worktree", "remove", "--force", "--force", str(wc.path)],
                    self.workspace,
                    check=False,
                )
                if removed.returncode != 0 and wc.path.exists():
                    shutil.rmtree(wc.path)
            self._git(["worktree", "prune"], self.workspace, check=False)
            if wc.branch and self._branch_exists(wc.branch):
                self._git(["branch", "-D", "-q", wc.branch], self.workspace)

    def prune(self) -> None:
        """Forget worktrees whose directories were deleted behind git's back."""
        if self.backend == "git":
            with self._repo_lock():
                self._git(["worktree", "prune"], self.workspace)

    # ------------------------------------------------------------------ git plumbing

    def _git(
        self,
        args: Sequence[str],
        cwd: Path,
        *,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = ["git", *args]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            result = subprocess.run(
                argv, cwd=cwd, env=env, input=input, capture_output=True, text=True, check=False
            )
        except OSError as exc:
            raise WorkcellError(f"cannot run git in {cwd}: {exc}") from None
        if check and result.returncode != 0:
            shown = " ".join(args)
            raise WorkcellError(
                f"git {shown} failed in {cwd} (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def _is_git_workspace(self) -> bool:
        try:
            top = self._git(["rev-parse", "--show-toplevel"], self.workspace, check=False)
            if top.returncode != 0 or Path(top.stdout.strip()).resolve() != self.workspace:
                return False
            head = self._git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], self.workspace, check=False)
        except WorkcellError:
            return False
        return head.returncode == 0

    def _branch_exists(self, branch: str) -> bool:
        return (
            self._git(
                ["show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], self.workspace, check=False
            ).returncode
            == 0
        )

    def _author(self) -> list[str]:
        """``-c user.name=… -c user.email=…`` defaults, only where the repository has none."""
        if self._identity is None:
            ident: list[str] = []
            for key, default in (("user.name", _DEFAULT_NAME), ("user.email", _DEFAULT_EMAIL)):
                got = self._git(["config", "--get", key], self.workspace, check=False)
                if got.returncode != 0 or not got.stdout.strip():
                    ident += ["-c", f"{key}={default}"]
            self._identity = ident
        return self._identity

    def _stage(self, wc: Workcell) -> None:
        """Stage the candidate's work; reserved names are put back to their base state."""
        base = self._require_base(wc)
        excludes = [f":(exclude){name}" for name in RESERVED_NAMES]
        self._git(["add", "-A", "--", ".", *excludes], wc.path)
        self._git(["reset", "-q", base, "--", *RESERVED_NAMES], wc.path)

    def _patch(self, wc: Workcell) -> str | None:
        try:
            self._stage(wc)
            base = self._require_base(wc)
            return self._git(["diff", "--cached", "--binary", base], wc.path).stdout
        except WorkcellError as exc:
            log.warning("workcell_patch_failed", workcell_id=wc.id, error=str(exc))
            return None

    def _require_base(self, wc: Workcell) -> str:
        if not wc.base_commit:
            raise WorkcellError(f"{wc.id}: git workcell without a base commit in its marker")
        return wc.base_commit

    def _ensure_root(self) -> None:
        if self._root_ready:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if self.backend == "git":
            self._exclude_kernel_state()
        self._root_ready = True

    def _exclude_kernel_state(self) -> None:
        """Keep nested worktrees and archives out of the main work tree's ``git status``."""
        common = self._git(["rev-parse", "--git-common-dir"], self.workspace).stdout.strip()
        exclude = (self.workspace / common).resolve() / "info" / "exclude"
        wanted = ["/.cyntra/workcells/", "/.cyntra/archives/"]
        with self._repo_lock():
            text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
            missing = [w for w in wanted if w not in text.splitlines()]
            if missing:
                exclude.parent.mkdir(parents=True, exist_ok=True)
                prefix = "" if not text or text.endswith("\n") else "\n"
                with open(exclude, "a", encoding="utf-8") as fh:
                    fh.write(prefix + "# cyntra kernel state\n" + "\n".join(missing) + "\n")

    @contextlib.contextmanager
    def _repo_lock(self) -> Iterator[None]:
        with file_lock(self.root / ".lock"):
            yield


def _write_archive_meta(where: Path, wc: Workcell, loser: bool, files: list[str]) -> dict[str, Any]:
    """``archive_meta.json``: which workcell, whether it lost a vote, when, and what is inside."""
    meta = {
        "workcell_id": wc.id,
        "issue_id": wc.issue_id,
        "loser": loser,
        "archived_at": clock.now_iso(),
        "backend": wc.backend,
        "branch": wc.branch,
        "base_commit": wc.base_commit,
        "files": sorted(files),
    }
    (where / ARCHIVE_META).write_text(dumps_file(meta), encoding="utf-8")
    return meta


def _write_marker(wc: Workcell) -> None:
    """Marker via temp file + rename: a crash leaves the old marker or none, never half of one.

    No fsync: the simulator creates tens of thousands of these, and a marker lost to a power
    failure only costs recovery one stale directory.
    """
    tmp = wc.path / f".{MARKER_NAME}.tmp"
    tmp.write_text(dumps_file(wc.to_marker()), encoding="utf-8")
    os.replace(tmp, wc.marker_path)


def _numstat_records(out: str) -> Iterator[tuple[int, int]]:
    """``git diff -z --numstat`` records: ``added<TAB>deleted<TAB>path<NUL>`` (binary: ``-``)."""
    for record in out.split("\0"):
        fields = record.split("\t")
        if len(fields) < 3:
            continue
        added = int(fields[0]) if fields[0].isdigit() else 0
        deleted = int(fields[1]) if fields[1].isdigit() else 0
        yield added, deleted


def _directory_changes(root: Path) -> tuple[list[FileChange], int]:
    """Every non-reserved file is "added"; lines are counted by newlines (cheap, no subprocess).
    Walks as ``os.walk`` would (top-down, names sorted, symlinks neither counted nor followed)
    with one ``scandir`` per directory, and a stack rather than recursion (any depth)."""
    changes: list[FileChange] = []
    lines = 0
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]  # (directory, its relative prefix)
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if not prefix and entry.name in RESERVED_NAMES:
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    subdirs.append((entry.path, prefix + entry.name + "/"))
                continue
            if entry.is_symlink():
                continue
            changes.append({"path": prefix + entry.name, "kind": "added"})
            try:
                with open(entry.path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            lines += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        stack.extend(reversed(subdirs))  # the first subdirectory is walked next, as os.walk does
    return changes, lines


def _archive_relpath(name: str) -> str:
    """An ``extra_files`` key must stay inside the archive directory."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or "\x00" in name:
        raise InputError(None, f"archive file name {name!r} must be a relative path inside the archive",
                         field="extra_files")
    if rel.parts[0] in (ARCHIVE_META, "workcell.json"):
        raise InputError(None, f"archive file name {name!r} is reserved", field="extra_files")
    return rel.as_posix()
