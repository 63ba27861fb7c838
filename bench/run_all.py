"""Run every benchmark in bench/ one after the other (what `make bench` runs).

Each benchmark is a separate process that builds and removes all it needs, so one
failing does not spoil the others. With `--readme`, the Markdown tables they print
replace the "Latest figures" section of bench/README.md (between its markers).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "create_to_first_byte",
    "member_change",
    "throughput",
    "failover",
    "density",
    "migrate",
    "policy",
    "protection",
]
EXTRA_ARGS = {"throughput": ["--explain"]}
END = "<!-- figures:end -->"
TIMEOUT = 600


def run(name: str) -> tuple[int, str]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *EXTRA_ARGS.get(name, [])]
    print(f"\n=== {name} ===", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        code = proc.wait(timeout=TIMEOUT)
    except BaseException:
        proc.terminate()  # it cleans up on SIGTERM
        proc.wait(30)
        raise
    print(f"=== {name}: exit {code} in {time.monotonic() - start:.0f} s ===", flush=True)
    return code, "".join(lines)


def update_readme(outputs: dict[str, str]) -> None:
    """Replace each benchmark's block between the figures markers (others are kept)."""
    readme = HERE / "README.md"
    text = readme.read_text()
    for name, out in outputs.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = f"{start}\n#{out.strip()}\n{end}"  # its '# title' becomes '## title'
        if start in text:
            text = re.sub(
                re.escape(start) + ".*?" + re.escape(end), lambda _, b=block: b, text, flags=re.S
            )
        else:
            text = text.replace(END, f"{block}\n\n{END}")
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=BENCHMARKS, help="benchmarks to run")
    parser.add_argument("--readme", action="store_true", help="write the figures into README")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (network namespaces, veths, real HAProxy)")
    outputs: dict[str, str] = {}
    failed = []
    for name in args.names:
        code, out = run(name)
        if code == 0:
            outputs[name] = out
        else:
            failed.append(name)
    if args.readme and outputs:
        update_readme(outputs)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
