"""Capture the /proc and /sys files the sensors read, twice, one second apart.

Run `python tests/data/proc/capture.py` to refresh tests/data/proc/t0 and t1 from this
machine. A child process doing file I/O is captured as the procstat subject (pid in
`subject`), and the capture time (ns) is stored in `time_ns` of each capture.
"""

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ["stat", "diskstats", "meminfo", "net/dev", "net/tcp", "net/tcp6", "net/udp",
         "net/udp6", "net/unix", "loadavg", "vmstat", "uptime",
         "sys/kernel/random/entropy_avail"]  # fmt: skip
BUSY = (
    "import os,sys,time\n"
    "f=open(sys.argv[1],'wb')\n"
    "while True:\n"
    "    f.write(os.urandom(1<<20)); f.flush(); os.fsync(f.fileno())\n"
    "    s=time.time()\n"
    "    while time.time()-s<0.05: pass\n"
)


def copy(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def capture(dest: str, pid: int) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    with open(os.path.join(dest + ".time_ns"), "w") as f:
        f.write(str(time.time_ns()))
    for name in FILES:
        copy(f"/proc/{name}", f"{dest}/proc/{name}")
    for path in glob.glob("/sys/class/net/*/flags") + glob.glob("/sys/class/net/*/speed"):
        with contextlib.suppress(OSError):  # speed of virtual devices: EINVAL, as on the node
            copy(path, dest + path)
    for path in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            copy(path, dest + path)
    for leaf in ("status", "io", "cmdline"):
        copy(f"/proc/{pid}/{leaf}", f"{dest}/proc/{pid}/{leaf}")
    with open(f"{dest}/proc/{pid}/fds", "w") as f:
        f.write(str(len(os.listdir(f"/proc/{pid}/fd"))))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        busy = subprocess.Popen([sys.executable, "-c", BUSY, os.path.join(tmp, "f")])
        try:
            time.sleep(1.5)
            for i in (0, 1):
                capture(os.path.join(HERE, f"t{i}"), busy.pid)
                if i == 0:
                    time.sleep(1.0)
        finally:
            busy.kill()
            busy.wait()
    with open(os.path.join(HERE, "subject"), "w") as f:
        f.write(str(busy.pid))


if __name__ == "__main__":
    main()
