"""The `analysis:` section of the lab config: ratios, thresholds, role aliases.

Example::

    analysis:
      ratios:                      # added to the default set (default_ratios: false drops it)
        osd_writes_per_client_write: "storage.osd_data.writes / client.write.ios"
      role_aliases: {storage: [ceph-osd, storage]}
      exclude_device_roles: [loopback]
      chunks: 5
      thresholds: {cpu_pct: 85, disk_util_pct: 95}
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from analysis.bottlenecks import Thresholds
from analysis.ratios import DEFAULT_CHUNKS, DEFAULT_EXCLUDE, DEFAULT_RATIOS, parse
from analysis.windows import AnalysisError
from collector.inventory import load_inventory

ThresholdsModel = create_model(
    "ThresholdsModel",
    __config__=ConfigDict(extra="forbid"),
    **{f.name: (float, Field(f.default, gt=0)) for f in fields(Thresholds)},
)


class AnalysisSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ratios: dict[str, str] = Field(default_factory=dict)
    default_ratios: bool = True
    role_aliases: dict[str, list[str]] = Field(default_factory=dict)
    exclude_device_roles: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    chunks: int = Field(DEFAULT_CHUNKS, ge=1, le=100)
    thresholds: ThresholdsModel = Field(default_factory=ThresholdsModel)  # type: ignore[valid-type]

    def ratio_exprs(self) -> dict[str, str]:
        return {**(DEFAULT_RATIOS if self.default_ratios else {}), **self.ratios}

    def limits(self) -> Thresholds:
        return Thresholds(**self.thresholds.model_dump())

    def engine_kw(self) -> dict[str, Any]:
        return {
            "aliases": self.role_aliases,
            "exclude_roles": self.exclude_device_roles,
            "chunks": self.chunks,
        }


def section_from(raw: Any, source: str = "config") -> AnalysisSection:
    """Validate the section; every expression is parsed so a typo fails before any query."""
    try:
        sec = AnalysisSection.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in ("analysis", *err["loc"]))
        raise AnalysisError(f"{source}: {where}: {err['msg']}") from None
    for name, text in sec.ratios.items():
        parse(name, text)
    return sec


def load(path: Path | None) -> tuple[AnalysisSection, dict | None]:
    """(analysis section, influx section) of a lab config; defaults without one."""
    if path is None:
        return AnalysisSection(), None
    cfg = load_inventory(path, check_files=False).config
    raw = (cfg.model_extra or {}).get("analysis")
    return section_from(raw, str(path)), cfg.influx.model_dump()
