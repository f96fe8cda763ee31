"""Checkpoints: round trip, corruption and mismatch refused with a reason, no pickle anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from planner_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from planner_model.config import URMConfig  # noqa: E402
from planner_model.model import URM  # noqa: E402

HEADS = [("swarm_id", 2), ("parallelism", 3), ("max_run_minutes", 4), ("max_candidates", 3)]
ACTIONS = ["serial_handoff/p1/15m/c1", "speculate_vote/p2/15m/c2"]
SWARMS = {"serial_handoff": "serial_handoff", "speculate_vote": "parallel_compete"}


@pytest.fixture()
def ckpt(tmp_path: Path) -> tuple[Path, URM]:
    torch.manual_seed(0)
    cfg = URMConfig(vocab_size=30, heads=HEADS, seq_len=16, hidden=16, n_heads=2, layers=1, loops=2, grad_loops=1, n_actions=2)
    model = URM(cfg).eval()
    save_checkpoint(
        tmp_path / "ck", model.state_dict(), cfg, vocab=[f"t{i}" for i in range(30)], vocab_sha256="v" * 64,
        heads={"swarm_id": ["serial_handoff", "speculate_vote"]}, actions=ACTIONS, swarm_types=SWARMS,
        dataset_sha256="d" * 64, metrics={"exact_match": 0.5}, temperature=1.7,
    )
    return tmp_path / "ck", model


def test_round_trip_same_outputs_and_metadata(ckpt: tuple[Path, URM]) -> None:
    path, model = ckpt
    loaded = load_checkpoint(path, expected_actions=ACTIONS, expected_swarms=SWARMS, expected_vocab_sha256="v" * 64)
    ids = torch.tensor([[2, 5, 6, 7, 0, 0]])
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = loaded.model(ids)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert loaded.temperature == pytest.approx(1.7)
    meta = json.loads((path / "checkpoint.json").read_text())
    assert {"model_config", "vocab", "vocab_sha256", "heads", "actions", "swarm_types", "dataset_sha256", "metrics", "code_version", "created_at"} <= set(meta)
    assert meta["code_version"].startswith("0.") or meta["code_version"][0].isdigit()
    assert loaded.sha256 == (path / "checkpoint.sha256").read_text().split()[0]


def test_no_pickle_files_only_safetensors_and_json(ckpt: tuple[Path, URM]) -> None:
    path, _ = ckpt
    names = sorted(p.name for p in path.iterdir())
    assert names == ["checkpoint.json", "checkpoint.sha256", "model.safetensors"]
    raw = (path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    json.loads(raw[8 : 8 + header_len])  # safetensors = 8-byte length + JSON header + raw tensors
    assert b"\x80\x04" not in raw[:2] and not raw.startswith(b"PK")  # not a pickle / torch zip
    src = Path(__file__).resolve().parents[1] / "train" / "planner_model"
    for module in src.glob("*.py"):
        text = module.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, module


def test_corrupted_weights_refused(ckpt: tuple[Path, URM]) -> None:
    path, _ = ckpt
    raw = bytearray((path / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"expected_actions": [*ACTIONS, "speculate_vote/p3/15m/c3"]}, "action space mismatch"),
        ({"expected_swarms": {"serial_handoff": "serial_handoff", "other_vote": "parallel_compete"}}, "swarm mismatch"),
        ({"expected_swarms": ["serial_handoff"]}, "swarm mismatch"),
        ({"expected_vocab_sha256": "x" * 64}, "vocabulary mismatch"),
    ],
)
def test_mismatch_refused(ckpt: tuple[Path, URM], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(ckpt[0], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("missing", ["model.safetensors", "checkpoint.json", "checkpoint.sha256"])
def test_missing_file_refused(ckpt: tuple[Path, URM], missing: str) -> None:
    (ckpt[0] / missing).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(ckpt[0])


def test_missing_directory_and_bad_json_refused(ckpt: tuple[Path, URM], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (ckpt[0] / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt[0])
