"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from pathlib import Path


def lfw_image_path(lfw: Path, name: str, number: int) -> Path:
    return lfw / name / f"{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[tuple[str, int, str, int]]:
    """LFW pairs file -> (name1, n1, name2, n2); matched pairs have name1 == name2."""
    lines = path.read_text().split("\n")
    out = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), parts[0], int(parts[2])))
        elif len(parts) == 4:
            out.append((parts[0], int(parts[1]), parts[2], int(parts[3])))
    return out


def lfw_images_from_pairs(lfw: Path, pairs_file: str, limit: int) -> list[Path]:
    """The first ``limit`` distinct images named by a pairs file, in file order."""
    seen: dict[Path, None] = {}
    for a, na, b, nb in read_pairs(lfw / pairs_file):
        for name, n in ((a, na), (b, nb)):
            seen.setdefault(lfw_image_path(lfw, name, n), None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)
