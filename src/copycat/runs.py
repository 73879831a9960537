"""The run directory: where each stage reads its input and writes its output (paths only).

``runs/<name>/`` holds ``config.json``, ``answers.sqlite``, ``checkpoints/``, ``metrics.csv``,
``copycat.safetensors`` + ``copycat.json``, ``eval.json`` and the report. Any stage can be re-run
or resumed alone from what the earlier ones left here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copycat import __version__


@dataclass(frozen=True, slots=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def store(self) -> Path:
        return self.root / "answers.sqlite"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def copycat_weights(self) -> Path:
        return self.root / "copycat.safetensors"

    @property
    def copycat_card(self) -> Path:
        return self.root / "copycat.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    def record(self, stage: str, config: Any, command: str | None = None) -> None:
        """Merge ``stage``'s resolved configuration (and command line) into ``config.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["version"] = __version__
        data[stage] = config
        if command:
            data.setdefault("commands", {})[stage] = command
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
