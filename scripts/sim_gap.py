#!/usr/bin/env python
"""How far is today's heuristic from the oracle in a sim world, and can a simple learner close it?

For N generated issues: the heuristic's plan (upstream routing rules) and its expected utility,
the oracle's best plan, the gap with a 95% bootstrap interval, the gap sliced by risk, size,
domain, title keyword and routing rule, and a deliberately simple learner that sees only
observable features: per (risk, size, domain, keyword, priority) cell (shrunk towards coarser
cells when sparse) it picks the plan with the best mean expected utility on the earlier half of the issues,
and is scored on the later half. Closing most of the gap this way shows it is learnable structure,
not noise the oracle alone can see.

    python scripts/sim_gap.py [--profile default|alt|FILE] [--issues 2000] [--seed S] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cyntra.planner.action_space import ActionSpace
from cyntra.sim.oracle import DEFAULT_ROUTING, best_of, oracle_for_issue
from cyntra.sim.population import domain_of, generate_issues
from cyntra.sim.profile import SimProfile, load_profile
from cyntra.state.issue import Issue

SPACE = ActionSpace()
SHRINK = 8.0


@dataclass
class Row:
    issue: Issue
    domain: str
    keyword: str
    rule: str
    eus: list[float]  # E[U] per action, action-space order
    p_pass: list[float]
    heur: int
    best: int

    @property
    def u_heur(self) -> float:
        return self.eus[self.heur]

    @property
    def u_oracle(self) -> float:
        return self.eus[self.best]


def keyword_of(title: str, profile: SimProfile) -> str:
    words = [k.word.lower() for k in profile.population.keywords]
    found = [w for w in words if re.search(rf"\b{re.escape(w)}\b", title.lower())]
    return found[0] if found else "-"


def build_rows(profile: SimProfile, n: int, seed: int) -> list[Row]:
    rows, _ = generate_issues(profile, n, seed)
    out = []
    for raw in rows:
        issue = Issue.model_validate(raw)
        table = oracle_for_issue(profile, issue)
        eus = [r.eu for r in table]
        heur = SPACE.index(DEFAULT_ROUTING.heuristic_plan(issue))
        best = SPACE.index(best_of(table).action)
        out.append(
            Row(
                issue,
                domain_of(issue.tags, profile) or "-",
                keyword_of(issue.title, profile),
                DEFAULT_ROUTING.route(issue).rule,
                eus,
                [r.p_pass for r in table],
                heur,
                best,
            )
        )
    return out


def bootstrap_ci(values: Sequence[float], n_boot: int, seed: int) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
    means = arr[idx].mean(axis=1)
    return float(arr.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def learner_cells(row: Row) -> list[tuple[str, ...]]:
    """Observable cells, coarsest first: all → size → (size, domain) → (risk, size, domain)
    → (risk, size, domain, keyword), plus a priority refinement at the end."""
    i = row.issue
    return [
        ("all",),
        ("s", i.dk_size),
        ("sd", i.dk_size, row.domain),
        ("rsd", i.dk_risk, i.dk_size, row.domain),
        ("rsdk", i.dk_risk, i.dk_size, row.domain, row.keyword),
        ("rsdkp", i.dk_risk, i.dk_size, row.domain, row.keyword, i.dk_priority),
    ]


def fit_learner(train: Sequence[Row], shrink: float = SHRINK) -> Callable[[Row], int]:
    """Per observable cell, the plan with the best mean E[U] on the training rows, each cell's
    means shrunk towards its parent's (``shrink`` pseudo-observations) so sparse cells fall back
    gracefully."""
    sums: dict[tuple[str, ...], np.ndarray] = {}
    counts: Counter[tuple[str, ...]] = Counter()
    for r in train:
        eus = np.asarray(r.eus)
        for cell in learner_cells(r):
            if cell in sums:
                sums[cell] += eus
            else:
                sums[cell] = eus.copy()
            counts[cell] += 1

    def choose(r: Row) -> int:
        est = np.zeros(len(SPACE))
        for depth, cell in enumerate(learner_cells(r)):
            n = counts[cell]
            if n == 0:
                continue
            est = sums[cell] / n if depth == 0 else (sums[cell] + shrink * est) / (n + shrink)
        return int(np.argmax(est))

    return choose


def slice_table(rows: Sequence[Row], key: Callable[[Row], str], title: str) -> list[dict[str, object]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    total_gap = sum(r.u_oracle - r.u_heur for r in rows) or 1.0
    out = []
    for name, rs in sorted(groups.items(), key=lambda kv: -sum(r.u_oracle - r.u_heur for r in kv[1])):
        gap = sum(r.u_oracle - r.u_heur for r in rs)
        common = Counter(SPACE.actions[r.best].label() for r in rs).most_common(1)[0][0]
        heur = Counter(SPACE.actions[r.heur].label() for r in rs).most_common(1)[0][0]
        out.append(
            {
                "slice": f"{title}={name}",
                "n": len(rs),
                "u_heuristic": sum(r.u_heur for r in rs) / len(rs),
                "u_oracle": sum(r.u_oracle for r in rs) / len(rs),
                "regret": gap / len(rs),
                "share_of_gap": gap / total_gap,
                "heuristic_plan": heur,
                "oracle_plan": common,
            }
        )
    return out


def analyse(profile: SimProfile, n: int, seed: int, n_boot: int = 2000) -> dict[str, object]:
    rows = build_rows(profile, n, seed)
    u_h = [r.u_heur for r in rows]
    u_o = [r.u_oracle for r in rows]
    gap = [o - h for o, h in zip(u_o, u_h, strict=True)]
    half = len(rows) // 2
    train, test = rows[:half], rows[half:]
    choose = fit_learner(train)
    u_l = [r.eus[choose(r)] for r in test]
    test_h = [r.u_heur for r in test]
    test_o = [r.u_oracle for r in test]
    closed = [(ul - uh) for ul, uh in zip(u_l, test_h, strict=True)]
    test_gap = sum(o - h for o, h in zip(test_o, test_h, strict=True))
    # Bootstrap the closure ratio on the test half.
    arr_l = np.asarray(closed)
    arr_g = np.asarray([o - h for o, h in zip(test_o, test_h, strict=True)])
    rng = np.random.default_rng(seed + 1)
    idx = rng.integers(0, len(test), size=(n_boot, len(test)))
    ratios = arr_l[idx].sum(axis=1) / arr_g[idx].sum(axis=1)
    # The best single plan for everyone (chosen on the training half): how much of the gap is
    # merely "a better constant", and how much needs the features.
    const = int(np.argmax(np.sum([r.eus for r in train], axis=0)))
    u_c = [r.eus[const] for r in test]
    slices: list[dict[str, object]] = []
    slices += slice_table(rows, lambda r: r.issue.dk_risk, "risk")
    slices += slice_table(rows, lambda r: r.issue.dk_size, "size")
    slices += slice_table(rows, lambda r: r.issue.dk_priority, "priority")
    slices += slice_table(rows, lambda r: r.domain, "domain")
    slices += slice_table(rows, lambda r: r.keyword, "keyword")
    slices += slice_table(rows, lambda r: r.rule, "rule")
    oracle_plans = Counter(SPACE.actions[r.best].label() for r in rows).most_common(8)
    return {
        "profile": profile.name,
        "issues": n,
        "seed": seed,
        "mean_u_heuristic": bootstrap_ci(u_h, n_boot, seed)[0],
        "mean_u_oracle": bootstrap_ci(u_o, n_boot, seed)[0],
        "mean_regret": bootstrap_ci(gap, n_boot, seed),
        "regret_share_of_oracle": sum(gap) / sum(u_o),
        "heuristic_pass_rate": float(np.mean([r.p_pass[r.heur] for r in rows])),
        "oracle_pass_rate": float(np.mean([r.p_pass[r.best] for r in rows])),
        "learner": {
            "test_issues": len(test),
            "mean_u_heuristic": sum(test_h) / len(test),
            "mean_u_learner": sum(u_l) / len(test),
            "mean_u_oracle": sum(test_o) / len(test),
            "gap_closed": sum(closed) / test_gap if test_gap else 0.0,
            "gap_closed_ci": (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))),
            "constant_plan": SPACE.actions[const].label(),
            "mean_u_constant": sum(u_c) / len(test),
            "gap_closed_constant": (sum(u_c) - sum(test_h)) / test_gap if test_gap else 0.0,
        },
        "oracle_plan_mix": oracle_plans,
        "slices": slices,
    }


def render(res: dict[str, object], markdown: bool) -> str:
    lines = []
    mr = res["mean_regret"]
    lr = res["learner"]
    assert isinstance(mr, tuple) and isinstance(lr, dict)
    lines.append(f"profile {res['profile']}: {res['issues']} issues, seed {res['seed']}")
    lines.append(
        f"mean utility: heuristic {res['mean_u_heuristic']:.2f}  oracle {res['mean_u_oracle']:.2f}  "
        f"regret {mr[0]:.2f} [95% CI {mr[1]:.2f}, {mr[2]:.2f}]  "
        f"= {100 * float(res['regret_share_of_oracle']):.0f}% of oracle utility"  # type: ignore[arg-type]
    )
    lines.append(
        f"pass rate: heuristic {100 * float(res['heuristic_pass_rate']):.1f}%  "  # type: ignore[arg-type]
        f"oracle {100 * float(res['oracle_pass_rate']):.1f}%"  # type: ignore[arg-type]
    )
    lines.append(
        f"simple learner (train on first half, test on second {lr['test_issues']}): "
        f"heuristic {lr['mean_u_heuristic']:.2f}  learner {lr['mean_u_learner']:.2f}  "
        f"oracle {lr['mean_u_oracle']:.2f}  gap closed {100 * lr['gap_closed']:.0f}% "
        f"[95% CI {100 * lr['gap_closed_ci'][0]:.0f}%, {100 * lr['gap_closed_ci'][1]:.0f}%]"
    )
    lines.append(
        f"best constant plan ({lr['constant_plan']}, chosen on the first half): "
        f"{lr['mean_u_constant']:.2f}, gap closed {100 * lr['gap_closed_constant']:.0f}%"
    )
    lines.append("oracle's most frequent plans: " + ", ".join(f"{a} ({c})" for a, c in res["oracle_plan_mix"]))  # type: ignore[attr-defined]
    lines.append("")
    if markdown:
        lines.append("| slice | n | U heuristic | U oracle | regret/issue | share of gap | heuristic plan | oracle plan (mode) |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---|")
    for s in res["slices"]:  # type: ignore[attr-defined]
        if markdown:
            lines.append(
                f"| {s['slice']} | {s['n']} | {s['u_heuristic']:.2f} | {s['u_oracle']:.2f} | {s['regret']:.2f} | "
                f"{100 * s['share_of_gap']:.0f}% | {s['heuristic_plan']} | {s['oracle_plan']} |"
            )
        else:
            lines.append(
                f"{s['slice']:<26} n={s['n']:<5} U_h={s['u_heuristic']:6.2f} U_o={s['u_oracle']:6.2f} "
                f"regret={s['regret']:5.2f} share={100 * s['share_of_gap']:4.0f}%  "
                f"heur={s['heuristic_plan']:<26} oracle={s['oracle_plan']}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--profile", default="default", help="bundled profile name or a YAML file")
    ap.add_argument("--issues", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None, help="generation seed (default: the profile's)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--markdown", action="store_true", help="slice table as Markdown")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    seed = profile.seed if args.seed is None else args.seed
    res = analyse(profile, args.issues, seed, args.bootstrap)
    print(render(res, args.markdown))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
