"""The hidden truth of one simulated host: what was really broken and when UEs struck.

Rule: plain frozen data plus its JSON form; only the generator writes it and only the scorer
reads it — replay never sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class TruthFault:
    id: int
    mode: str
    permanent: bool
    #: Spans more than one DRAM row: page retirement cannot contain it (hardware must go).
    wide: bool
    labels: tuple[str, ...]
    mcs: tuple[int, ...]
    first_error_at: float
    errors: int
    pages: int


@dataclass(frozen=True, slots=True)
class TruthCE:
    at: float
    pfn: int
    fault: int


@dataclass(frozen=True, slots=True)
class TruthUE:
    at: float
    pfn: int
    fault: int
    label: str
    mc: int
    #: The kernel's own CEC soft-offlined this page before the UE (CEC hosts only): avoided
    #: whatever the policy did.
    cec_offlined: bool = False


@dataclass(frozen=True, slots=True)
class HostTruth:
    host: int
    seed: int
    start_at: float
    end_at: float
    cec: bool
    faults: tuple[TruthFault, ...]
    ces: tuple[TruthCE, ...]
    ues: tuple[TruthUE, ...]
    cec_offlines: tuple[tuple[float, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "seed": self.seed,
            "start_at": self.start_at,
            "end_at": self.end_at,
            "cec": self.cec,
            "faults": [
                {
                    "id": f.id,
                    "mode": f.mode,
                    "permanent": f.permanent,
                    "wide": f.wide,
                    "labels": list(f.labels),
                    "mcs": list(f.mcs),
                    "first_error_at": f.first_error_at,
                    "errors": f.errors,
                    "pages": f.pages,
                }
                for f in self.faults
            ],
            # Compact rows: [at, pfn, fault]; a suite holds hundreds of thousands of them.
            "ces": [[c.at, c.pfn, c.fault] for c in self.ces],
            "ues": [
                {
                    "at": u.at,
                    "pfn": u.pfn,
                    "fault": u.fault,
                    "label": u.label,
                    "mc": u.mc,
                    "cec_offlined": u.cec_offlined,
                }
                for u in self.ues
            ],
            "cec_offlines": [[t, pfn] for t, pfn in self.cec_offlines],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostTruth:
        return cls(
            host=int(data["host"]),
            seed=int(data["seed"]),
            start_at=float(data["start_at"]),
            end_at=float(data["end_at"]),
            cec=bool(data["cec"]),
            faults=tuple(
                TruthFault(
                    id=int(f["id"]),
                    mode=str(f["mode"]),
                    permanent=bool(f["permanent"]),
                    wide=bool(f["wide"]),
                    labels=tuple(str(x) for x in f["labels"]),
                    mcs=tuple(int(x) for x in f["mcs"]),
                    first_error_at=float(f["first_error_at"]),
                    errors=int(f["errors"]),
                    pages=int(f["pages"]),
                )
                for f in data["faults"]
            ),
            ces=tuple(TruthCE(float(t), int(p), int(f)) for t, p, f in data["ces"]),
            ues=tuple(
                TruthUE(
                    at=float(u["at"]),
                    pfn=int(u["pfn"]),
                    fault=int(u["fault"]),
                    label=str(u["label"]),
                    mc=int(u["mc"]),
                    cec_offlined=bool(u.get("cec_offlined", False)),
                )
                for u in data["ues"]
            ),
            cec_offlines=tuple((float(t), int(p)) for t, p in data.get("cec_offlines", [])),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> HostTruth:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
