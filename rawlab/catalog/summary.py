"""``rawlab catalog show``: what is in a store, counted per sensor, ISO, role and status."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["catalog_summary", "format_summary"]


def catalog_summary(cat: pd.DataFrame) -> dict[str, Any]:
    """Counts per sensor, ISO, role and status, plus the failures and exclusions with their reasons.

    ``files`` counts every source file: the catalog's rows plus the copies of identical content listed in
    their ``other_paths`` (``duplicates``); the other counts are per row, each content once.
    """
    ok = cat[cat["status"] != "failed"]
    sensors = []
    for sensor, rows in ok.groupby("sensor", sort=True):
        isos = []
        for iso, r in rows.groupby(rows["iso"].fillna(-1), sort=True):
            isos.append(
                {
                    "iso": None if iso == -1 else float(iso),
                    "roles": {k: int(v) for k, v in r["role"].value_counts().sort_index().items()},
                    "status": {k: int(v) for k, v in r["status"].value_counts().sort_index().items()},
                }
            )
        sensors.append(
            {
                "sensor": sensor,
                "frames": len(rows),
                "cfa": sorted(rows["cfa"].dropna().unique().tolist()),
                "sizes": sorted(
                    {f"{int(w)}x{int(h)}" for w, h in zip(rows["width"], rows["height"], strict=True)}
                ),
                "scenes": int(rows["scene"].nunique()),
                "isos": isos,
            }
        )
    bad = cat[cat["status"].isin(["failed", "excluded"])]
    copies = cat["other_paths"] if "other_paths" in cat.columns else pd.Series([], dtype=object)
    duplicates = [
        {"path": p, "other_paths": [str(c) for c in other]}
        for p, other in zip(cat["path"], copies, strict=False)
        if other is not None and len(other)
    ]
    out = {
        "files": len(cat) + sum(len(d["other_paths"]) for d in duplicates),
        "duplicates": duplicates,
        "status": {k: int(v) for k, v in cat["status"].value_counts().sort_index().items()},
        "roles": {k: int(v) for k, v in ok["role"].value_counts().sort_index().items()},
        "sensors": sensors,
        "problems": [
            {"path": p, "status": s, "kind": k or "", "reason": e}
            for p, s, k, e in zip(
                bad["path"], bad["status"], bad["error_kind"].fillna(""), bad["error"], strict=True
            )
        ],
    }
    bursts = _bursts(cat)
    if bursts:  # only stores with bursts (rawlab.catalog.bursts) get the key
        out["bursts"] = bursts
    return out


def _bursts(cat: pd.DataFrame) -> dict[str, Any] | None:
    """Counts of the bursts and their frames by role, and one line per burst."""
    if "burst_id" not in cat.columns or not cat["burst_id"].notna().any():
        return None
    rows = cat[cat["burst_id"].notna()]
    each = []
    for bid, r in rows.groupby("burst_id", sort=True):
        r = r.sort_values("burst_index")
        ref = r.loc[r["role"] == "reference", "burst_index"]
        each.append({
            "burst_id": bid, "sensor": r["sensor"].iloc[0], "scene": r["scene"].iloc[0], "frames": len(r),
            "iso": None if pd.isna(r["iso"].iloc[0]) else float(r["iso"].iloc[0]),
            "reference": int(ref.iloc[0]) if len(ref) else None,
            "excluded": int((r["role"] == "excluded").sum()),
        })  # fmt: skip
    roles = rows["role"].value_counts()
    return {
        "n": len(each), "frames": len(rows), "references": int(roles.get("reference", 0)),
        "excluded": int(roles.get("excluded", 0)), "bursts": each,
    }  # fmt: skip


def format_summary(summary: dict[str, Any], store: str) -> str:
    """A table a person reads at a glance."""
    lines = [
        f"{store}: {summary['files']} files; status "
        + ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    ]
    bursts = bool(summary.get("bursts"))  # a column of burst frames, only in stores that have bursts
    lines.append(
        f"{'sensor':<34} {'ISO':>7} {'clean':>6} {'noisy':>6} {'single':>6} {'excl.':>6}"
        + (f" {'burst':>6}" if bursts else "")
    )
    for s in summary["sensors"]:
        for i, iso in enumerate(s["isos"]):
            name = f"{s['sensor']} ({', '.join(s['cfa'])}, {', '.join(s['sizes'])})" if i == 0 else ""
            r, st = iso["roles"], iso["status"]
            label = "n/a" if iso["iso"] is None else f"{iso['iso']:g}"
            in_bursts = sum(r.get(k, 0) for k in ("reference", "frame", "excluded"))
            lines.append(
                f"{name[:34]:<34} {label:>7} {r.get('clean', 0):>6} {r.get('noisy', 0):>6} "
                f"{r.get('single', 0):>6} {st.get('excluded', 0):>6}" + (f" {in_bursts:>6}" if bursts else "")
            )
    if summary.get("bursts"):
        b = summary["bursts"]
        lines.append(
            f"bursts: {b['n']} ({b['frames']} frames: {b['references']} references, "
            f"{b['frames'] - b['references'] - b['excluded']} frames, {b['excluded']} excluded)"
        )
        for e in b["bursts"]:
            iso = "n/a" if e["iso"] is None else f"{e['iso']:g}"
            lines.append(
                f"  {e['burst_id']}  {e['sensor']}  {e['scene']}  ISO {iso}: {e['frames']} frames, reference "
                f"{e['reference']}, {e['excluded']} excluded"
            )
    if summary.get("duplicates"):
        lines.append("identical content, stored once (the copies are listed with the first path):")
        for d in summary["duplicates"]:
            lines.append(f"  {d['path']}: also {', '.join(d['other_paths'])}")
    if summary["problems"]:
        lines.append("problems:")
        for p in summary["problems"]:
            lines.append(f"  {p['status']:<8} {p['path']}: {p['reason']}")
    return "\n".join(lines)
