"""What `check` found: problems that name a recipe key and a fix, plus the measurements."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["CheckReport", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (error) or suspicious (warning) with a recipe.

    Attributes:
        severity: "error" stops `check` with a non-zero exit; "warning" does not.
        key: the recipe key to change, e.g. ``data.init_args.input_size``.
        message: what is wrong, with the values involved.
        fix: what to change it to, concretely.
        category: which class of failure (``shape``, ``masks``, ``batch``, ``storage``,
            ``data``, ``contract``, ``pretrained``, ``spectral``, ``numerics``, ``device``,
            ``config``).
        value: the value found at `key`, as written, when that is the problem.
    """

    severity: Literal["error", "warning"]
    key: str
    message: str
    fix: str
    category: str
    value: str | None = None

    def __str__(self) -> str:
        where = self.key if self.value is None else f"{self.key} = {self.value}"
        return f"[{self.severity.upper()}] {where}: {self.message}\n    fix: {self.fix}"


@dataclass
class CheckReport:
    """Everything `check` measured, in the order it was measured."""

    recipe: str
    device: str = ""
    problems: list[Problem] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    masks: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, int] = field(default_factory=dict)
    performance: dict[str, Any] = field(default_factory=dict)
    pictures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(
        self,
        severity: Literal["error", "warning"],
        key: str,
        message: str,
        fix: str,
        category: str,
        value: str | None = None,
    ) -> None:
        self.problems.append(Problem(severity, key, message, fix, category, value))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    def render(self) -> str:
        """The human-readable report: errors first (the reason before any detail), then the
        tables, then warnings and the verdict."""
        lines = [str(p) for p in self.errors] + ([""] if self.errors else [])
        lines += [f"fmtrain check {self.recipe}  (device: {self.device})", ""]
        if self.stages:
            lines.append(_table(["stage", "shape", "dtype"], [
                [s["stage"], s["shape"], s["dtype"]] for s in self.stages
            ]))  # fmt: skip
        if self.masks:
            lines.append(_table(
                ["mask family", "context min/mean/max", "target min/mean/max", "tokens"],
                [[m["family"], _triple(m["context_fraction"]), _triple(m["target_fraction"]),
                  m["num_tokens"]] for m in self.masks],
            ))  # fmt: skip
        if self.parameters:
            lines.append(_table(
                ["module", "parameters"], [[k, f"{v:,}"] for k, v in self.parameters.items()]
            ))  # fmt: skip
        if self.performance:
            lines.append(
                _table(["measure", "value"], [[k, v] for k, v in self.performance.items()])
            )
        lines += [f"picture: {p}" for p in self.pictures]
        lines.append("")
        lines += [str(p) for p in self.problems if p.severity != "error"]
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        verdict = "FAILED (errors listed first)" if n_err else "OK"
        lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s) in {self.seconds:.1f} s")
        return "\n".join(lines)


def _triple(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in cells[1:]]
    return "\n".join(out) + "\n"
