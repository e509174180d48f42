"""On a machine with a real NVIDIA GPU: what only a real GPU can show, in under 5 minutes.

Starts a daemon on the machine's real inventory (NVML) and checks, printing what
it saw:

1. devices and memory as NVML reports them, and as the daemon does;
2. four 0.25-GPU torch trials sharing one device at once, each seeing one
   device, its own ``CUDA_VISIBLE_DEVICES``;
3. a trial on every GPU waiting until the previous one's CUDA memory is
   released (no process of it listed by NVML when the next one starts);
4. a running trial's GPU memory in ``tuned status --json``;
5. a trainable whose import initialises CUDA running in a fresh process, not
   forked from the daemon's warm worker, and CUDA working there.

``--dry-run`` runs the same checks on a machine without a GPU: a faked one-GPU
inventory whose per-process memory the trials write to its state file, and a
stand-in ``torch`` whose CUDA counts as initialised. It proves the script and
the daemon's side of each check, not the GPU's.

On the lent GPU machine (Python 3.12 with torch and nvidia-ml-py, no network),
msgspec and structlog travel as wheels. Here, once, in the repository's root::

    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl msgspec==0.23.0 structlog==26.1.0

then one device run with ``carry=[".whl"]``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
        --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.:client \\
        && PYTHONUNBUFFERED=1 python3 -m bench.gpu_check --out "$OUT"

It exits 1 if any check fails, and writes ``gpu_check.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .daemon import BenchDaemon, bench_daemon
from .gpu_trainables import locked

GiB = 2**30
FAKE_TORCH = """
class cuda:  # a stand-in: CUDA "initialised" by importing the trainable
    @staticmethod
    def init():
        pass

    @staticmethod
    def is_initialized():
        return True
"""


@dataclass
class Check:
    name: str
    ok: bool = False
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(f"    {line}", flush=True)


class Machine:
    """The daemon under test and how the checks reach it."""

    def __init__(self, d: BenchDaemon, real: bool, tmp: Path, fake_state: Path) -> None:
        self.d, self.real, self.tmp, self.fake_state = d, real, tmp, fake_state
        self.driver = None if real else FakeDriver(fake_state)
        if self.driver is not None:
            self.driver.start()
        for key, value in d.env().items():
            if key.startswith("TUNED_"):
                os.environ[key] = value

    def fit(self, trainable: Any, n: int, resources: Any, **common: Any) -> list[dict[str, Any]]:
        from tuned_client import tune

        space = {"i": tune.grid_search(list(range(n))), "real": self.real, **common}
        space["fake_state"] = str(self.fake_state)
        results = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=space,
            run_config=tune.RunConfig(verbose=0, storage_path=str(self.tmp / "results")),
        ).fit()
        errors = [str(r.error) for r in results if r.error]
        if errors:
            raise RuntimeError(f"{len(errors)} trial(s) failed: {errors[0][-2000:]}")
        return sorted((dict(r.metrics) for r in results), key=lambda m: m["start"])

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "tuned", "status", "--json"],
            env=self.d.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        status: dict[str, Any] = json.loads(out.stdout)
        return status

    def log(self) -> str:
        return (self.d.state_dir / "daemon.stderr").read_text(errors="replace")

    def gpus(self) -> int:
        return len(self.status()["gpus"])


def check_devices(m: Machine, c: Check) -> None:
    if m.real:
        import pynvml

        pynvml.nvmlInit()
        nvml = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            nvml.append((str(i), name.decode() if isinstance(name, bytes) else name, total))
        c.say(f"driver {pynvml.nvmlSystemGetDriverVersion()}")
    else:
        nvml = [("0", "Fake GPU", 16 * GiB)]
    for index, name, total in nvml:
        c.say(f"NVML   gpu {index}: {name}, {total / GiB:.1f} GiB")
    gpus = m.status()["gpus"]
    for g in gpus:
        c.say(f"daemon gpu {g['id']}: {g.get('memory_total', 0) / GiB:.1f} GiB")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    expected = [n for n in nvml if visible is None or n[0] in visible.split(",")]
    c.ok = [g["id"] for g in gpus] == [n[0] for n in expected] and all(
        g.get("memory_total") == n[2] for g, n in zip(gpus, expected, strict=False)
    )


def check_sharing(m: Machine, c: Check) -> None:
    from .gpu_trainables import sharing

    barrier = m.tmp / "barrier"
    barrier.mkdir()
    seen = m.fit(sharing, 4, {"gpu": 0.25, "cpu": 0.25}, barrier=str(barrier), together=4)
    for s in seen:
        c.say(
            f"pid {s['pid']}: CUDA_VISIBLE_DEVICES={s['cuda_visible_devices']!r}, "
            f"{s['device_count']} device(s) {s.get('device_name', '')}, met {s['met']} of 4"
        )
    ids = {s["cuda_visible_devices"] for s in seen}
    c.ok = (
        len(ids) == 1
        and "," not in next(iter(ids))
        and all(s["device_count"] == 1 and s["met"] == 4 for s in seen)
    )


def check_release(m: Machine, c: Check) -> None:
    from .gpu_trainables import release_pair

    every = m.gpus()
    first, second = m.fit(release_pair, 2, {"gpu": every, "cpu": 0.25}, gib=2.0, seconds=1.0)
    c.say(f"first trial pid {first['pid']} held 2 GiB on {first['cuda_visible_devices']}")
    c.say(f"next trial started {second['start'] - first['end']:.2f} s after it ended")
    c.say(f"processes holding GPU memory as it started: {second['nvml_pids'] or 'none'}")
    if "free_fraction" in second:
        c.say(f"free device memory as it started: {second['free_fraction']:.1%}")
    waited = "waiting for GPU memory to be released" in m.log()
    c.say(f"the daemon waited for the release: {'yes' if waited else 'no (it was already free)'}")
    c.ok = first["pid"] not in second["nvml_pids"]
    if m.driver is not None:  # the stand-in driver let it go 1 s late: the next trial waited
        freed = m.driver.freed.get(str(first["pid"]))
        c.say(
            f"the stand-in driver freed it {freed - first['end']:.2f} s after it ended"
            if freed
            else "never freed"
        )
        c.ok = c.ok and waited and freed is not None and second["start"] >= freed


class FakeDriver(threading.Thread):
    """Under --dry-run: frees a dead process's device memory a second after it dies.

    The trials write their pid and bytes into the fake inventory's state file;
    a real driver frees a process's memory some time after it exits, which is
    what the daemon must wait for before handing the device on.
    """

    def __init__(self, state: Path) -> None:
        super().__init__(daemon=True)
        self.state = state
        self.dead: dict[str, float] = {}
        self.freed: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.05):
            with locked(self.state) as held:
                now = time.time()
                gone = []
                for device in held.values():
                    for pid in device:
                        if psutil.pid_exists(int(pid)):
                            continue
                        if now - self.dead.setdefault(pid, now) >= 1.0:
                            gone.append(pid)
                for device in held.values():
                    for pid in gone:
                        device.pop(pid, None)
                self.freed.update(dict.fromkeys(gone, time.time()))


def check_status_memory(m: Machine, c: Check) -> None:
    from .gpu_trainables import holder

    until = m.tmp / "release-holder"
    rows: list[dict[str, Any]] = []
    poll = threading.Thread(target=_poll_status, args=(m, until, rows), daemon=True)
    poll.start()
    m.fit(holder, 1, {"gpu": 1, "cpu": 0.25}, gib=1.0, until=str(until))
    poll.join(timeout=5)
    row = rows[-1] if rows else {}
    c.say(f"running trial in `tuned status --json`: {json.dumps(row)}")
    c.ok = row.get("gpu_memory", 0) >= 0.9 * GiB


def _poll_status(m: Machine, until: Path, rows: list[dict[str, Any]]) -> None:
    deadline = time.time() + 90
    try:
        while time.time() < deadline:
            running = m.status().get("running", [])
            if running:
                rows.append(running[0])
                if running[0].get("gpu_memory", 0) > 0:
                    return
            time.sleep(0.5)
    finally:
        until.touch()


def check_cuda_import(m: Machine, c: Check) -> None:
    if not m.real:  # the stand-in torch goes first on the path, for the trial too
        (m.tmp / "fake_torch" / "torch").mkdir(parents=True)
        (m.tmp / "fake_torch" / "torch" / "__init__.py").write_text(FAKE_TORCH)
        sys.path.insert(0, str(m.tmp / "fake_torch"))
    from .gpu_cuda_import import cuda_at_import

    (seen,) = m.fit(cuda_at_import, 1, {"gpu": 0.25, "cpu": 0.25})
    c.say(f"trial pid {seen['pid']}, started by: {seen['parent'][:120]}")
    if "sum" in seen:
        c.say(f"CUDA in the trial: torch.ones(1024).sum() = {seen['sum']:g}")
    refused = "spawning this experiment's trials instead" in m.log()
    c.say(f"the warm worker refused to fork it: {'yes' if refused else 'not in the log'}")
    c.ok = "tuned_client.zygote" not in seen["parent"] and seen.get("sum", 1024) == 1024


CHECKS: list[tuple[str, Callable[[Machine, Check], None]]] = [
    ("devices and memory as NVML reports them", check_devices),
    ("four 0.25-GPU trials share one device, each sees only it", check_sharing),
    ("a GPU trial waits until the previous one's memory is released", check_release),
    ("per-trial GPU memory in `tuned status --json`", check_status_memory),
    ("a trainable whose import initialises CUDA runs in a fresh process", check_cuda_import),
]


def run(real: bool, timeout: float) -> list[Check]:
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="tuned-gpu-check-") as tmp:
        fake_state = Path(tmp) / "gpu-state.json"
        args = ["--gpu-release-timeout", "20", "--log-level", "info"]
        if not real:
            args += ["--num-gpus", "1", "--fake-gpu-state", str(fake_state), "--num-cpus", "4"]
        with bench_daemon(*args) as d:
            m = Machine(d, real, Path(tmp), fake_state)
            deadline = time.monotonic() + timeout
            for name, fn in CHECKS:
                c = Check(name)
                checks.append(c)
                print(f"-- {name}", flush=True)
                if time.monotonic() > deadline:
                    c.say("skipped: out of time")
                    continue
                try:
                    fn(m, c)
                except Exception as exc:
                    c.say(f"failed: {type(exc).__name__}: {exc}")
                print(f"   {'PASS' if c.ok else 'FAIL'}", flush=True)
        # fit()'s TensorBoard writer finishes its files after fit() returns: let it end
        # before the folder it writes in goes
        psutil.wait_procs(psutil.Process().children(recursive=True), timeout=60)
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="a faked GPU: no NVIDIA needed")
    parser.add_argument("--out", default="", help="folder for gpu_check.json")
    parser.add_argument("--timeout", type=float, default=240, help="seconds for all checks")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("gpu_check: out of time"))
    signal.alarm(int(args.timeout) + 60)
    started = time.monotonic()
    checks = run(not args.dry_run, args.timeout)
    took = time.monotonic() - started
    passed = sum(c.ok for c in checks)
    where = "dry run" if args.dry_run else "real GPU"
    print(f"{passed}/{len(checks)} checks passed in {took:.0f} s ({where})")
    if args.out:
        report = {"real": not args.dry_run, "seconds": took, "checks": [c.__dict__ for c in checks]}
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=2))
    sys.exit(0 if passed == len(checks) else 1)


if __name__ == "__main__":
    main()
