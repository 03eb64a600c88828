"""Run every benchmark (benchmarks/bench_*.py) and print their tables (make bench).

    python benchmarks/run_all.py [ARGS...]      # ARGS go to every script, e.g. --quick or --json
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in sorted(HERE.glob("bench_*.py")):
    print(f"\n== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script), *sys.argv[1:]], check=False)
