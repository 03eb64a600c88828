"""Run every benchmark and print their tables (make bench)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("bench_slider.py", "bench_finetune.py", "bench_speedup.py", "bench_gui_stall.py", "bench_gui_drag.py",
               "bench_sensitivity.py", "bench_deep_compression.py",
               "bench_criteria.py", "bench_schedules.py"):
    print(f"\n== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=False)
