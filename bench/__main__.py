"""Run all benchmarks (or those named on the command line) and write BENCHMARKS.md."""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def _split(text: str) -> tuple[str, dict[str, str]]:
    """BENCHMARKS.md as (header, {bench name: section}); sections follow `<!-- bench:NAME -->`."""
    parts = text.split("<!-- bench:")
    sections = {}
    for part in parts[1:]:
        name, _, body = part.partition(" -->\n")
        sections[name] = body.strip()
    return parts[0], sections


def _join(header: str, sections: dict[str, str]) -> str:
    body = "\n\n".join(f"<!-- bench:{name} -->\n{sections[name]}" for name in sorted(sections))
    return header.rstrip() + "\n\n" + body + "\n"


def main(argv: list[str]) -> int:
    """`python -m bench [--update] [NAME...]`.

    With no names, runs every bench and rewrites BENCHMARKS.md. With names, runs those and prints
    them; `--update` also replaces (or adds) just their sections in BENCHMARKS.md, so one bench
    can be refreshed without rerunning the rest.
    """
    update = "--update" in argv
    argv = [a for a in argv if a != "--update"]
    names = argv or sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))
    sections: dict[str, str] = {}
    load = os.getloadavg()[0]
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        section = mod.run()
        print(section, flush=True)
        print(f"({name} took {time.perf_counter() - start:.1f} s)\n", flush=True)
        sections[name] = section.strip()
    header = (
        "# edgetrust benchmarks\n\n"
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"Machine: {_machine()}.\n\n"
        "Each section measures edgetrust beside the baseline its issue names, in the same "
        "run. Shared machines are noisy: read ratios, not single figures. A section refreshed "
        "alone (`python -m bench --update NAME`) carries its own date and machine.\n"
    )
    path = ROOT / "BENCHMARKS.md"
    if argv and not update:
        print("(partial run: BENCHMARKS.md not rewritten; --update rewrites these sections)")
        return 0
    if update and path.exists():
        # The header describes the last full run: keep it; the refreshed sections say their own.
        header, old = _split(path.read_text())
        stamp = (
            f"_(refreshed alone on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_machine()}; "
            f"load average {load:.1f} at the start)_\n\n"
        )
        old.update({name: stamp + body for name, body in sections.items()})
        sections = old
    path.write_text(_join(header, sections))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
