"""World evolution (``cyntra evolve``): generations of candidates, a swarm topology, the best one kept.

One run of a universe's world:

1. **Decision.** The world run is presented to the decision engine as a synthetic issue
   ``world:<world_id>`` (tags from the world, priority/risk/size from ``world.yaml``'s ``issue``),
   ``job_type="world"``. The heuristic's plan is the universe default (``defaults.swarm_id``, that
   swarm's ``population_size``) or the CLI flags; the strategy (heuristic / shadow / urm / plugin)
   decides through the same clamp, shadow and ledger as issue dispatch. The applied plan gives the
   swarm and the population (``max_candidates``); ``max_run_minutes`` caps each candidate's time
   (together with ``timeout_seconds`` of the world).
2. **Generations.** Generation 0 runs the world's default parameters and mutations of them;
   every later generation mutates the incumbent (the best eligible candidate so far; elitism, so
   the best never gets worse). ``parallel_compete`` swarms run the population at once (asyncio);
   ``serial_handoff`` runs candidates one after another and *hands off only while none has
   improved*: the first candidate that is eligible and strictly beats the incumbent (any eligible
   one in a generation without an incumbent) ends its generation.
3. **Candidates.** Each runs the world's argv template in its own workcell, writes a metrics
   JSON, then its gates run (shell commands as the verifier runs them, and metric thresholds).
   A command that fails, hangs (killed at the time budget) or writes invalid metrics is recorded
   with its status and excluded from selection; the run always completes.
4. **Selection.** Eligible = command succeeded, metrics valid and (when the objective, else the
   swarm's selection, requires it) every gate passed. Ranking is lexicographic over the
   objective's metrics in file order, each by its direction (max/min); ties go to the earlier
   candidate.
5. **Records.** ``.cyntra/runs/<run_id>/``: ``context.json`` (run context), ``manifest.json``
   (``cyntra.manifest.v1`` with the decision record under ``planner``), ``candidates/<gen>-<i>/``
   (params, metrics, ``result.json`` with gate results, logs) and ``evolve_world.json``
   (``evolve_world.schema.json``). The decision and its outcome go to the decisions ledger; every
   candidate becomes a ``run_summary.v1`` (job_type world) in the similar-runs index.

Outcome utility (the reward joined to the decision): the improvement of the objective's first
metric from generation 0's best eligible candidate to the final best, signed so that positive is
better (``max``: final − baseline; ``min``: baseline − final); 0.0 when generation 0 had no
eligible candidate (no baseline).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cyntra import clock, schemas
from cyntra.adapters.base import build_env, run_process
from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import ConfigError, InputError
from cyntra.fsutil import atomic_write_json, dumps_json
from cyntra.kernel.artifacts import (
    ControlSpec,
    GateResult,
    Manifest,
    PlanSpec,
    SpeculateSpec,
    Verification,
    derive_fail_codes,
    load_json_object,
    parse_artifact,
)
from cyntra.kernel.plan import DispatchPlan, TraceStep
from cyntra.kernel.session import KernelSession
from cyntra.kernel.verifier import run_gates
from cyntra.log import get_logger
from cyntra.planner.action_space import MAX_CANDIDATES, PlanAction, snap_minutes
from cyntra.planner.planner_input import domain_of_tags, issue_features, planner_input_hash
from cyntra.planner.run_summary import ExecutedPlan, RunSummary
from cyntra.state.issue import Issue
from cyntra.strategy.base import StrategyContext
from cyntra.strategy.engine import Decision
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import OutcomeRecord
from cyntra.universe.context import RunContext, read_context, write_context
from cyntra.universe.loader import LoadedUniverse, Objective, Swarm
from cyntra.universe.world import (
    ChoiceParam,
    FloatParam,
    IntParam,
    LoadedWorld,
    WorldSpec,
    load_world,
    placeholder_values,
)
from cyntra.workcell.ids import format_timestamp
from cyntra.workcell.manager import WorkcellManager
from cyntra.workspace import Workspace

log = get_logger("cyntra.evolve")

JOB_TYPE = "world"
WORLD_TOOLCHAIN = "world"  # the "toolchain" of a world candidate: the world's own command
EVOLVE_WORLD_FILE = "evolve_world.json"
EVOLVE_WORLD_SCHEMA: Literal["cyntra.evolve_world.v1"] = "cyntra.evolve_world.v1"
CANDIDATE_SCHEMA: Literal["cyntra.world_candidate.v1"] = "cyntra.world_candidate.v1"
MAX_METRICS_BYTES = 1_000_000

CandidateStatus = Literal["success", "failed", "timeout", "error", "invalid_metrics"]
Direction = Literal["max", "min"]
EvolveStatus = Literal["success", "no_passing_candidate"]


# --------------------------------------------------------------------------- artifact models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateResult(_Strict):
    """``candidates/<gen>-<i>/result.json``: one candidate, what ran and how it was judged."""

    schema_version: Literal["cyntra.world_candidate.v1"] = CANDIDATE_SCHEMA
    candidate_id: str
    generation: int = Field(ge=0)
    index: int = Field(ge=0)
    parent_id: str | None = None
    seed: int
    params: dict[str, Any]
    argv: list[str]
    status: CandidateStatus
    exit_code: int | None = None
    error: str | None = None
    metrics: dict[str, float] | None = None
    verification: Verification | None = None
    all_gates_passed: bool = False
    eligible: bool = False
    fail_codes: list[str] = Field(default_factory=list)
    started_at: str
    completed_at: str
    duration_ms: int = Field(ge=0)
    workcell_id: str


class CandidateBrief(_Strict):
    """A candidate as ``evolve_world.json`` lists it."""

    candidate_id: str
    generation: int = Field(ge=0)
    index: int = Field(ge=0)
    status: CandidateStatus
    eligible: bool
    all_gates_passed: bool
    metrics: dict[str, float] | None = None
    params: dict[str, Any]
    seed: int
    duration_ms: int = Field(ge=0)
    fail_codes: list[str] = Field(default_factory=list)


class GenerationSummary(_Strict):
    generation: int = Field(ge=0)
    parent_id: str | None = None
    candidates_run: int = Field(ge=0)
    eligible: int = Field(ge=0)
    stopped_early: bool = False
    best_id: str | None = None  # this generation's best eligible candidate
    best_metrics: dict[str, float] | None = None
    incumbent_id: str | None = None  # the best eligible candidate so far (after this generation)
    incumbent_metrics: dict[str, float] | None = None


class ObjectiveSpec(_Strict):
    objective_id: str
    metrics: dict[str, Direction]
    order: list[str]
    require_all_gates_pass: bool


class EvolveWorldReport(_Strict):
    """``evolve_world.json`` (``evolve_world.schema.json``)."""

    schema_version: Literal["cyntra.evolve_world.v1"] = EVOLVE_WORLD_SCHEMA
    run_id: str
    universe_id: str
    world_id: str
    objective_id: str
    swarm_id: str
    swarm_type: Literal["parallel_compete", "serial_handoff"]
    strategy: str
    decision_id: str
    applied_source: str
    fallback_reason: str | None = None
    population_size: int = Field(ge=1)
    generations: int = Field(ge=1)
    generations_run: int = Field(ge=0)
    seed: int
    candidate_timeout_seconds: float = Field(gt=0)
    objective: ObjectiveSpec
    status: EvolveStatus
    best: CandidateBrief | None = None
    baseline: float | None = None
    utility: float
    per_generation: list[GenerationSummary]
    candidates: list[CandidateBrief]
    world_file: str
    world_sha256: str
    started_at: str
    completed_at: str
    duration_ms: int = Field(ge=0)


@dataclass
class EvolveResult:
    run_dir: Path
    report: EvolveWorldReport
    decision: Decision
    candidates: list[CandidateResult] = field(default_factory=list)


# --------------------------------------------------------------------------- selection


def objective_spec(objective: Objective, swarm: Swarm) -> ObjectiveSpec:
    require = objective.require_all_gates_pass
    if require is None:
        require = swarm.selection.require_all_gates_pass
    return ObjectiveSpec(objective_id=objective.id, metrics=dict(objective.metrics),
                         order=list(objective.metrics), require_all_gates_pass=require)


def metric_key(metrics: Mapping[str, float], objective: ObjectiveSpec) -> tuple[float, ...]:
    """Lexicographic sort key: smaller is better (``max`` metrics are negated)."""
    return tuple(
        -metrics[m] if objective.metrics[m] == "max" else metrics[m] for m in objective.order
    )


def rank_key(c: CandidateResult, objective: ObjectiveSpec) -> tuple[Any, ...]:
    assert c.metrics is not None
    return (*metric_key(c.metrics, objective), c.generation, c.index)


def best_of(cands: list[CandidateResult], objective: ObjectiveSpec) -> CandidateResult | None:
    eligible = [c for c in cands if c.eligible]
    return min(eligible, key=lambda c: rank_key(c, objective)) if eligible else None


def beats(c: CandidateResult, incumbent: CandidateResult | None, objective: ObjectiveSpec) -> bool:
    """``c`` is eligible and strictly better than the incumbent (any eligible beats none)."""
    if not c.eligible or c.metrics is None:
        return False
    if incumbent is None or incumbent.metrics is None:
        return True
    return metric_key(c.metrics, objective) < metric_key(incumbent.metrics, objective)


# --------------------------------------------------------------------------- parameters


def derived_int(*parts: object) -> int:
    """A 31-bit integer from the parts (stable across processes and machines)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def mutate(spec: WorldSpec, parent: Mapping[str, Any], rng: random.Random, generation: int) -> dict[str, Any]:
    """The parent's parameters perturbed: clipped Gaussian steps (sigma = scale·range·decay^gen)."""
    m = spec.mutation
    out: dict[str, Any] = {}
    for name, p in spec.params.items():
        value = parent.get(name)
        if isinstance(p, ChoiceParam):
            if value not in p.values:
                value = p.values[0]
            others = [v for v in p.values if v != value]
            out[name] = rng.choice(others) if others and rng.random() < m.choice_rate else value
            continue
        sigma = m.scale * (p.high - p.low) * (m.decay**generation)
        base = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else (p.low + p.high) / 2
        x = min(max(base + rng.gauss(0.0, sigma), p.low), p.high)
        if isinstance(p, IntParam):
            out[name] = round(x)
        else:
            assert isinstance(p, FloatParam)
            out[name] = round(x, 9)
    return out


# --------------------------------------------------------------------------- metrics


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def read_metrics(path: Path, required: list[str]) -> tuple[dict[str, float] | None, str | None]:
    """The metrics a candidate wrote, or (None, why they are unusable)."""
    if not path.is_file():
        return None, f"metrics file {path.name} was not written"
    if path.stat().st_size > MAX_METRICS_BYTES:
        return None, f"metrics file {path.name} is larger than {MAX_METRICS_BYTES} bytes"
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"metrics file {path.name}: invalid JSON: {exc}"
    if not isinstance(data, dict):
        return None, f"metrics file {path.name}: expected a JSON object, found {type(data).__name__}"
    metrics: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics[str(key)] = float(value)
        elif key in required:
            return None, f"metrics file {path.name}: {key}: {value!r} is not a finite number"
    missing = [m for m in required if m not in metrics]
    if missing:
        return None, f"metrics file {path.name}: missing metric(s) {', '.join(missing)}"
    return metrics, None


# --------------------------------------------------------------------------- the plan


def _synthetic_issue(world: LoadedWorld, universe: LoadedUniverse) -> Issue:
    tags = list(world.tags)
    if world.entry.world_kind == "fab_world" and "asset:world" not in tags:
        tags.append("asset:world")  # the controller's fab_world domain
    spec = world.spec
    return Issue(
        id=f"world:{world.world_id}",
        title=f"evolve world {world.world_id} ({universe.universe_id})",
        description=spec.description,
        tags=tags,
        dk_priority=spec.issue.priority,
        dk_risk=spec.issue.risk,
        dk_size=spec.issue.size,
    )


def _heuristic_plan(
    issue: Issue, universe: LoadedUniverse, spec: WorldSpec, swarm_id: str | None, population: int | None,
) -> DispatchPlan:
    """The plan without a planner: the CLI flags, else the universe defaults."""
    trace: list[TraceStep] = []
    if swarm_id is None:
        swarm_id = universe.defaults.swarm_id
        if swarm_id is None:
            swarm_id = sorted(universe.swarms)[0]
            trace.append(TraceStep(step="world", detail=f"no defaults.swarm_id: first catalog swarm {swarm_id}"))
        else:
            trace.append(TraceStep(step="world", detail=f"universe default swarm {swarm_id}"))
    else:
        trace.append(TraceStep(step="world", detail=f"--swarm {swarm_id}"))
    if swarm_id not in universe.swarms:
        raise ConfigError(universe.root / "swarms.yaml", f"unknown swarm {swarm_id!r}; swarms: {sorted(universe.swarms)}",
                          field="swarms")
    swarm = universe.swarms[swarm_id]
    if population is None:
        population = min(swarm.population_size, max(MAX_CANDIDATES))
        note = "" if population == swarm.population_size else f" (capped from {swarm.population_size})"
        trace.append(TraceStep(step="world", detail=f"population {population} from swarm {swarm_id}{note}"))
    else:
        if population not in MAX_CANDIDATES:
            raise InputError(None, f"population {population} not in {MAX_CANDIDATES}", field="population")
        trace.append(TraceStep(step="world", detail=f"--population {population}"))
    parallel = swarm.type == "parallel_compete"
    minutes = snap_minutes(spec.timeout_seconds / 60.0)
    action = PlanAction(swarm_id=swarm_id, parallelism=population if parallel else 1,
                        max_run_minutes=minutes, max_candidates=population)
    return DispatchPlan(issue_id=issue.id, action=action, toolchains=[WORLD_TOOLCHAIN] * max(MAX_CANDIDATES),
                        speculate=parallel, trace=trace)


def decide_world_run(
    session: KernelSession,
    world: LoadedWorld,
    objective_id: str,
    *,
    swarm_id: str | None = None,
    population: int | None = None,
    now: datetime | None = None,
) -> tuple[Issue, Decision]:
    """The strategy's decision for one world run (clamped, recorded by the caller)."""
    universe = session.universe
    assert universe is not None
    issue = _synthetic_issue(world, universe)
    at = now or clock.now()
    heuristic = _heuristic_plan(issue, universe, world.spec, swarm_id, population)
    pi = session.planner_input(issue, at, job_type=JOB_TYPE, world_id=world.world_id, objective_id=objective_id)
    toolchains = [WORLD_TOOLCHAIN] * max(MAX_CANDIDATES)
    ctx = StrategyContext(
        issue=issue,
        heuristic=heuristic,
        serial_toolchains=toolchains,
        speculate_toolchains=toolchains,
        now=at,
        job_type=JOB_TYPE,
        planner_input=pi.model_dump(mode="json"),
        extras={"universe_id": universe.universe_id, "planner_input_hash": planner_input_hash(pi),
                "planner_input_model": pi, "world_id": world.world_id, "objective_id": objective_id},
    )
    decision = session.engine.decide([ctx])[0]
    return issue, decision


# --------------------------------------------------------------------------- the run


class _Evolution:
    """One evolve run: holds what every candidate needs."""

    def __init__(
        self,
        session: KernelSession,
        world: LoadedWorld,
        objective: ObjectiveSpec,
        decision: Decision,
        issue: Issue,
        run_id: str,
        run_dir: Path,
        seed: int,
        manager: WorkcellManager,
    ) -> None:
        universe = session.universe
        assert universe is not None
        self.session = session
        self.universe = universe
        self.world = world
        self.spec = world.spec
        self.objective = objective
        self.decision = decision
        self.issue = issue
        self.run_id = run_id
        self.run_dir = run_dir
        self.seed = seed
        action = decision.plan.action
        self.swarm = universe.swarms[action.swarm_id]
        self.population = action.max_candidates
        self.timeout_s = min(self.spec.timeout_seconds, action.max_run_minutes * 60.0)
        self.required = self.spec.required_metrics(objective.order)
        self.manager = manager
        self.workcell_issue = f"world-{world.world_id}"[:48].rstrip(".")

    # -- one candidate ---------------------------------------------------------------------

    async def run_candidate(self, generation: int, index: int, params: dict[str, Any],
                            parent_id: str | None) -> CandidateResult:
        """Run one candidate; whatever goes wrong becomes its recorded status, never an exception."""
        cid = f"{generation}-{index}"
        seed = derived_int(self.seed, "seed", generation, index)
        out_dir = self.run_dir / "candidates" / cid
        out_dir.mkdir(parents=True, exist_ok=True)
        full_params = {**params, **self.spec.overrides}
        atomic_write_json(out_dir / "params.json", full_params)
        started = clock.now()
        t0 = time.monotonic()
        status: CandidateStatus = "error"
        metrics: dict[str, float] | None = None
        verification: Verification | None = None
        exit_code: int | None = None
        error: str | None = None
        argv: list[str] = []
        wc_id = ""
        try:
            wc = await asyncio.to_thread(self.manager.create, self.workcell_issue, f"g{generation}c{index}")
            wc_id = wc.id
            try:
                params_path = wc.path / self.spec.params_file
                metrics_path = wc.path / self.spec.metrics_file
                params_path.parent.mkdir(parents=True, exist_ok=True)
                metrics_path.parent.mkdir(parents=True, exist_ok=True)
                params_path.write_text(dumps_json(full_params), encoding="utf-8")
                values = placeholder_values(seed=seed, workcell=wc.path, params_file=params_path,
                                            metrics_file=metrics_path, generation=generation, candidate=index,
                                            world_dir=self.world.world_dir)
                argv = self.spec.render_command(values)
                run_env = {
                    **self.universe.determinism_env(), **self.spec.env,
                    "CYNTRA_SEED": str(seed), "CYNTRA_WORKCELL": str(wc.path),
                    "CYNTRA_PARAMS_FILE": str(params_path), "CYNTRA_METRICS_FILE": str(metrics_path),
                    "CYNTRA_GENERATION": str(generation), "CYNTRA_CANDIDATE": str(index),
                    "CYNTRA_WORLD_DIR": str(self.world.world_dir),
                }
                proc = await run_process(argv, wc.path, build_env(run_env), None, self.timeout_s,
                                         wc.logs_dir / "stdout.log", wc.logs_dir / "stderr.log")
                exit_code, error = proc.exit_code, proc.error
                if proc.timed_out:
                    status = "timeout"
                elif proc.exit_code is None:
                    status = "error"
                elif proc.exit_code != 0:
                    status, error = "failed", f"exit code {proc.exit_code}"
                else:
                    metrics, error = read_metrics(metrics_path, self.required)
                    status = "success" if metrics is not None else "invalid_metrics"
                if metrics is not None:
                    verification = await self._gates(wc.path, wc.logs_dir, run_env, metrics)
                    verification = _relocate_logs(verification, wc.logs_dir, out_dir / "logs")
                self._collect(wc.logs_dir, metrics_path, out_dir, valid=metrics is not None)
            finally:
                await asyncio.to_thread(self.manager.cleanup, wc)
        except Exception as exc:  # a broken workcell or file must not stop the other candidates
            status, metrics, verification = "error", None, None
            error = f"{type(exc).__name__}: {exc}"
        all_passed = verification is not None and verification.all_passed
        eligible = status == "success" and (all_passed or not self.objective.require_all_gates_pass)
        codes = derive_fail_codes("failed" if status == "invalid_metrics" else status, exit_code,
                                  verification or Verification())
        if status == "invalid_metrics":
            codes.append("invalid_metrics")
        result = CandidateResult(
            candidate_id=cid, generation=generation, index=index, parent_id=parent_id, seed=seed,
            params=full_params, argv=argv, status=status, exit_code=exit_code, error=error,
            metrics=metrics, verification=verification, all_gates_passed=all_passed, eligible=eligible,
            fail_codes=codes, started_at=isoformat_z(started), completed_at=isoformat_z(clock.now()),
            duration_ms=int((time.monotonic() - t0) * 1000), workcell_id=wc_id or "-",
        )
        atomic_write_json(out_dir / "result.json", result.model_dump(mode="json"))
        log.info("evolve.candidate", run_id=self.run_id, candidate_id=cid, status=status, eligible=eligible,
                 metrics=metrics, error=error)
        return result

    async def _gates(self, cwd: Path, logs_dir: Path, env: dict[str, str],
                     metrics: dict[str, float]) -> Verification:
        shell = await run_gates(cwd, self.spec.shell_gates(), self.spec.gate_timeout_seconds, logs_dir, env=env)
        results: dict[str, GateResult] = {}
        for name, gate in self.spec.gates.items():
            if isinstance(gate, str):
                results[name] = shell.gates[name]
            else:
                ok = gate.check(metrics)
                results[name] = GateResult(passed=ok, exit_code=0 if ok else 1, duration_ms=0,
                                           command=gate.label(), log_path=None)
        return Verification.from_gates(results)

    def _collect(self, logs_dir: Path, metrics_path: Path, out_dir: Path, *, valid: bool) -> None:
        """Copy what the candidate left behind into the run directory (the workcell goes away)."""
        if metrics_path.is_file():
            shutil.copyfile(metrics_path, out_dir / ("metrics.json" if valid else "metrics.invalid"))
        if logs_dir.is_dir():
            shutil.copytree(logs_dir, out_dir / "logs", dirs_exist_ok=True)

    # -- generations -----------------------------------------------------------------------

    async def run_generation(self, generation: int, parent: CandidateResult | None,
                             incumbent: CandidateResult | None) -> tuple[list[CandidateResult], bool]:
        base = dict(parent.params) if parent is not None else self.spec.default_params()
        base = {k: v for k, v in base.items() if k in self.spec.params}
        parent_id = parent.candidate_id if parent is not None else None
        plans: list[dict[str, Any]] = []
        for i in range(self.population):
            if generation == 0 and i == 0:
                plans.append(dict(base))
            else:
                rng = random.Random(derived_int(self.seed, "mutate", generation, i))
                plans.append(mutate(self.spec, base, rng, generation))
        if self.swarm.type == "parallel_compete":
            results = await asyncio.gather(*(self.run_candidate(generation, i, p, parent_id)
                                             for i, p in enumerate(plans)))
            return list(results), False
        out: list[CandidateResult] = []
        for i, p in enumerate(plans):
            r = await self.run_candidate(generation, i, p, parent_id)
            out.append(r)
            if beats(r, incumbent, self.objective) and i < len(plans) - 1:
                return out, True
        return out, False


def _relocate_logs(v: Verification, old: Path, new: Path) -> Verification:
    gates = {}
    for name, g in v.gates.items():
        if g.log_path is not None and Path(g.log_path).is_relative_to(old):
            g = g.model_copy(update={"log_path": str(new / Path(g.log_path).relative_to(old))})
        gates[name] = g
    return v.model_copy(update={"gates": gates})


def _brief(c: CandidateResult) -> CandidateBrief:
    return CandidateBrief(candidate_id=c.candidate_id, generation=c.generation, index=c.index, status=c.status,
                          eligible=c.eligible, all_gates_passed=c.all_gates_passed, metrics=c.metrics,
                          params=c.params, seed=c.seed, duration_ms=c.duration_ms, fail_codes=c.fail_codes)


def _new_run_dir(session: KernelSession, world_id: str, at: datetime) -> tuple[str, Path]:
    root = session.workspace.runs_dir
    root.mkdir(parents=True, exist_ok=True)
    base = f"evolve-{world_id}-{format_timestamp(at)}"
    run_id, n = base, 2
    while True:
        try:
            (root / run_id).mkdir()
            return run_id, root / run_id
        except FileExistsError:
            run_id, n = f"{base}-{n}", n + 1


def _summary_status(c: CandidateResult) -> Literal["success", "failed", "timeout", "error"]:
    if c.status == "success":
        return "success" if c.eligible else "failed"
    if c.status in ("timeout", "error"):
        return c.status
    return "failed"


def _utility(objective: ObjectiveSpec, baseline: CandidateResult | None,
             best: CandidateResult | None) -> tuple[float | None, float]:
    metric = objective.order[0]
    if baseline is None or best is None or baseline.metrics is None or best.metrics is None:
        return None, 0.0
    base, final = baseline.metrics[metric], best.metrics[metric]
    gain = final - base if objective.metrics[metric] == "max" else base - final
    return base, round(gain, 9)


def resolve_objective(universe: LoadedUniverse, objective_id: str | None) -> Objective:
    oid = objective_id or universe.defaults.objective_id
    if oid is None:
        raise ConfigError(universe.universe_file, "no objective: pass --objective or set defaults.objective_id",
                          field="defaults.objective_id")
    if oid not in universe.objectives:
        raise ConfigError(universe.root / "objectives.yaml",
                          f"unknown objective {oid!r}; objectives: {sorted(universe.objectives)}", field="objectives")
    return universe.objectives[oid]


async def evolve_world_async(
    session: KernelSession,
    world_id: str,
    *,
    generations: int | None = None,
    population: int | None = None,
    swarm_id: str | None = None,
    objective_id: str | None = None,
    seed: int | None = None,
) -> EvolveResult:
    """Run one world evolution end to end (see the module docstring); returns what it wrote."""
    universe = session.universe
    if universe is None:
        raise ConfigError(session.workspace.config_path, "cyntra evolve needs a universe (--universe)",
                          field="universe")
    world = load_world(universe, world_id)
    objective_model = resolve_objective(universe, objective_id)
    if generations is not None and generations < 1:
        raise InputError(None, f"generations must be >= 1, got {generations}", field="generations")
    n_generations = generations if generations is not None else world.spec.generations
    run_seed = seed if seed is not None else world.spec.seed
    # Everything that can refuse the run does so before a decision is recorded.
    manager = WorkcellManager(session.workspace.root, world.spec.workcell_backend)

    started = clock.now()
    t0 = time.monotonic()
    issue, decision = decide_world_run(session, world, objective_model.id, swarm_id=swarm_id,
                                       population=population, now=started)
    record = decision.record
    ledger = Ledger(session.workspace.decisions_dir)
    ledger.append(record)
    log.info("strategy.decision", decision_id=record.decision_id, issue_id=record.issue_id, job_type=JOB_TYPE,
             mode=record.mode, applied=record.applied.action.label(), source=record.applied.source,
             fallback_reason=record.fallback_reason, world_id=world_id, objective_id=objective_model.id)
    action = decision.plan.action
    swarm = universe.swarms[action.swarm_id]
    objective = objective_spec(objective_model, swarm)
    run_id, run_dir = _new_run_dir(session, world_id, started)
    evo = _Evolution(session, world, objective, decision, issue, run_id, run_dir, run_seed, manager)

    write_context(run_dir, RunContext(universe_id=universe.universe_id, world_id=world_id,
                                      objective_id=objective.objective_id, swarm_id=action.swarm_id, issue_id=None))
    world_bytes = world.path.read_bytes()
    parallel = swarm.type == "parallel_compete"
    manifest = Manifest(
        workcell_id=run_id,
        issue=issue.model_dump(mode="json"),
        job_type=JOB_TYPE,
        toolchain=WORLD_TOOLCHAIN,
        toolchain_config={"command": list(world.spec.command), "world_file": str(world.path),
                          "world_sha256": hashlib.sha256(world_bytes).hexdigest(), "seed": run_seed,
                          "generations": n_generations, "timeout_seconds": evo.timeout_s},
        quality_gates=world.spec.gate_labels(),
        speculate=SpeculateSpec(enabled=parallel, parallelism=action.parallelism if parallel else None),
        control=ControlSpec(domain=domain_of_tags(issue.tags)),
        plan=PlanSpec(swarm_id=action.swarm_id, parallelism=action.parallelism,
                      max_run_minutes=action.max_run_minutes, max_candidates=action.max_candidates,
                      toolchains=decision.plan.candidate_toolchains()),
        planner=record.model_dump(mode="json"),
        universe_id=universe.universe_id,
        created_at=isoformat_z(started),
        workspace_backend=evo.manager.backend,
    )
    manifest_data = manifest.model_dump(mode="json")
    schemas.validate("manifest", manifest_data, path=run_dir / "manifest.json")
    atomic_write_json(run_dir / "manifest.json", manifest_data)

    all_results: list[CandidateResult] = []
    per_gen: list[GenerationSummary] = []
    incumbent: CandidateResult | None = None
    baseline: CandidateResult | None = None
    for g in range(n_generations):
        results, stopped = await evo.run_generation(g, incumbent, incumbent)
        all_results.extend(results)
        gen_best = best_of(results, objective)
        if g == 0:
            baseline = gen_best
        if gen_best is not None and beats(gen_best, incumbent, objective):
            incumbent = gen_best
        per_gen.append(GenerationSummary(
            generation=g, parent_id=results[0].parent_id if results else None, candidates_run=len(results),
            eligible=sum(c.eligible for c in results), stopped_early=stopped,
            best_id=gen_best.candidate_id if gen_best else None, best_metrics=gen_best.metrics if gen_best else None,
            incumbent_id=incumbent.candidate_id if incumbent else None,
            incumbent_metrics=incumbent.metrics if incumbent else None,
        ))

    completed = clock.now()
    base_value, utility = _utility(objective, baseline, incumbent)
    report = EvolveWorldReport(
        run_id=run_id, universe_id=universe.universe_id, world_id=world_id, objective_id=objective.objective_id,
        swarm_id=action.swarm_id, swarm_type=swarm.type, strategy=record.mode, decision_id=record.decision_id,
        applied_source=record.applied.source, fallback_reason=record.fallback_reason,
        population_size=evo.population, generations=n_generations, generations_run=len(per_gen), seed=run_seed,
        candidate_timeout_seconds=evo.timeout_s, objective=objective,
        status="success" if incumbent is not None else "no_passing_candidate",
        best=_brief(incumbent) if incumbent is not None else None, baseline=base_value, utility=utility,
        per_generation=per_gen, candidates=[_brief(c) for c in all_results],
        world_file=str(world.path), world_sha256=hashlib.sha256(world_bytes).hexdigest(),
        started_at=isoformat_z(started), completed_at=isoformat_z(completed),
        duration_ms=int((time.monotonic() - t0) * 1000),
    )
    report_data = report.model_dump(mode="json")
    schemas.validate("evolve_world", report_data, path=run_dir / EVOLVE_WORLD_FILE)
    atomic_write_json(run_dir / EVOLVE_WORLD_FILE, report_data)

    ledger.append(OutcomeRecord(
        decision_id=record.decision_id, issue_id=record.issue_id, timestamp=isoformat_z(completed),
        status="success" if incumbent is not None else "failed", gates_passed=incumbent is not None,
        started_at=isoformat_z(started), completed_at=isoformat_z(completed), duration_ms=report.duration_ms,
        candidates_run=len(all_results), winner_toolchain=None, utility=utility,
    ))
    _index_candidates(session, run_dir)
    log.info("evolve.completed", run_id=run_id, status=report.status, best=report.best.candidate_id if report.best
             else None, utility=utility, candidates=len(all_results))
    return EvolveResult(run_dir=run_dir, report=report, decision=decision, candidates=all_results)


def _index_candidates(session: KernelSession, run_dir: Path) -> None:
    """One ``run_summary.v1`` per candidate, so later world runs retrieve them as similar runs.

    Built from the files just written (:func:`world_run_summaries`), so the live index and an
    offline rebuild or dataset build see exactly the same summaries.
    """
    for summary in world_run_summaries(run_dir):
        session.index.add(summary)


def world_run_summaries(run_dir: str | Path) -> list[RunSummary]:
    """The run summaries of a finished world run directory, one per candidate (index order).

    Reads ``manifest.json`` (issue snapshot, decision record, plan), ``evolve_world.json`` (the
    best candidate, completion time) and ``candidates/*/result.json``. A run that never finished
    (no ``evolve_world.json``) or a file that does not parse raises an :class:`InputError` naming
    the file; callers report and skip it.
    """
    d = Path(run_dir)
    mpath, rpath = d / "manifest.json", d / EVOLVE_WORLD_FILE
    manifest = parse_artifact(Manifest, load_json_object(mpath), mpath)
    report = parse_artifact(EvolveWorldReport, load_json_object(rpath), rpath)
    record = manifest.planner or {}
    decision_id, decision_time = record.get("decision_id"), record.get("timestamp")
    if not isinstance(decision_id, str) or not isinstance(decision_time, str):
        raise InputError(mpath, "a world run manifest carries its decision record", field="planner")
    feats = issue_features(manifest.issue, path=str(mpath))
    plan = ExecutedPlan(swarm_id=manifest.plan.swarm_id, parallelism=manifest.plan.parallelism,
                        max_run_minutes=manifest.plan.max_run_minutes, max_candidates=manifest.plan.max_candidates)
    best_id = report.best.candidate_id if report.best is not None else None
    out: list[RunSummary] = []
    for brief in sorted(report.candidates, key=lambda b: (b.generation, b.index)):
        cpath = d / "candidates" / brief.candidate_id / "result.json"
        c = parse_artifact(CandidateResult, load_json_object(cpath), cpath)
        failed_gates = list(c.verification.blocking_failures) if c.verification else []
        out.append(RunSummary(
            run_id=f"{report.run_id}-g{c.generation}-c{c.index}",
            issue_id=feats.id,
            decision_id=decision_id,
            job_type=JOB_TYPE,
            domain=domain_of_tags(feats.tags),  # type: ignore[arg-type]
            world_id=report.world_id,
            objective_id=report.objective_id,
            universe_id=report.universe_id,
            tags=list(manifest.issue.get("tags") or []),
            issue=feats,
            toolchain=WORLD_TOOLCHAIN,
            plan=plan,
            candidate_index=c.index,
            loser=best_id is None or c.candidate_id != best_id,
            status=_summary_status(c),
            all_passed=c.all_gates_passed,
            failed_gates=failed_gates,
            fail_codes=list(c.fail_codes),
            duration_ms=c.duration_ms,
            started_at=c.started_at,
            completed_at=c.completed_at,
            available_at=report.completed_at,  # outcomes are observable once the run has finished
            decision_time=isoformat_z(parse_ts(decision_time)),
        ))
    return out


def world_run_dirs(workspace: Path) -> list[Path]:
    """The run directories ``cyntra evolve`` created (``evolve-*``), in name order (deterministic)."""
    root = Workspace.at(workspace).runs_dir
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("evolve-"))


@dataclass(frozen=True)
class WorldRun:
    """One run directory of ``.cyntra/runs/`` as :func:`list_world_runs` lists it."""

    run_id: str
    run_dir: Path
    context: RunContext
    status: str | None  # evolve_world.json's status; None while running or if unreadable


def list_world_runs(
    workspace: Path,
    *,
    universe_id: str | None = None,
    world_id: str | None = None,
    objective_id: str | None = None,
) -> list[WorldRun]:
    """The world runs of a workspace (newest first), filtered by their ``context.json``.

    Unreadable run directories are skipped: this is a listing, not a validator.
    """
    root = Workspace.at(workspace).runs_dir
    out: list[WorldRun] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir(), reverse=True):
        if not (d / "context.json").is_file():
            continue
        try:
            ctx = read_context(d)
        except InputError:
            continue
        wanted = {"universe_id": universe_id, "world_id": world_id, "objective_id": objective_id}
        if ctx.world_id is None or any(v is not None and getattr(ctx, k) != v for k, v in wanted.items()):
            continue
        status: str | None = None
        try:
            status = json.loads((d / EVOLVE_WORLD_FILE).read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        out.append(WorldRun(run_id=d.name, run_dir=d, context=ctx, status=status))
    return out


def evolve_world(session: KernelSession, world_id: str, **kw: Any) -> EvolveResult:
    """Synchronous entry point (the CLI's): runs :func:`evolve_world_async` in a new event loop."""
    return asyncio.run(evolve_world_async(session, world_id, **kw))
