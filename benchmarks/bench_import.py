"""How long `import segkit`, `segkit --help` and `import segkit, keras` take, each in a fresh Python process.

`import segkit` must stay light (the command line answers `--help` without loading a deep-learning backend),
yet once Keras is imported a `.keras` file of any segkit model must load. Each figure is the median wall time
of --repeats fresh processes, with Python's own start-up (`python -c pass`) listed for reference. The last
line times, inside each process, only what `import segkit` adds once Keras is loaded (registering segkit's
Keras classes): on a busy machine the whole-process figures vary by more than that.

    python benchmarks/bench_import.py [--repeats 7] [--backend tensorflow]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (start-up alone)": [sys.executable, "-c", "pass"],
    "import segkit": [sys.executable, "-c", "import segkit"],
    "segkit --help": [sys.executable, "-m", "segkit.cli", "--help"],
    "import segkit, keras": [sys.executable, "-c", "import segkit, keras"],
    "import keras (no segkit)": [sys.executable, "-c", "import keras"],
}
# Prints the seconds `import segkit` takes in a process that has already imported Keras.
SEGKIT_AFTER_KERAS = "import time, keras; t = time.perf_counter(); import segkit; print(time.perf_counter() - t)"


def median_seconds(command, repeats: int, env: dict) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_in_process(code: str, repeats: int, env: dict) -> float:
    runs = [subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
            for _ in range(repeats)]
    return statistics.median(float(run.stdout.split()[-1]) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"))
    args = parser.parse_args()
    env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"median of {args.repeats} fresh processes, KERAS_BACKEND={args.backend}")
    for name, command in CASES.items():
        print(f"  {name:<34} {median_seconds(command, args.repeats, env):6.3f} s")
    print(f"  {'import segkit after keras (inside)':<34} {median_in_process(SEGKIT_AFTER_KERAS, args.repeats, env):6.3f} s")
    print(f"rerun: python benchmarks/bench_import.py --repeats {args.repeats} --backend {args.backend}")


if __name__ == "__main__":
    main()
