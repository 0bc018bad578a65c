"""Shared by the real-client scripts: start, SIGKILL and restart a
`strata serve` on a free loopback port with its own data directory."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, strata, extra=()):
        self.strata = strata
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="strata-client-test-")
        self.extra = list(extra)
        self.proc = None
        self.log = open(os.path.join(self.dir, "broker.log"), "ab")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [
            self.strata, "serve",
            "--listen", self.bootstrap,
            "--data", os.path.join(self.dir, "data"),
            "--set", "group.initial.rebalance.delay.ms=0",
        ] + self.extra
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}; log: {self.log_path()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("broker did not start listening within 30 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise SystemExit("broker did not stop within 30 s of SIGTERM")
            if rc != 0:
                raise SystemExit(f"broker exited with {rc} after SIGTERM")

    def log_path(self):
        return os.path.join(self.dir, "broker.log")

    def dump_log(self):
        try:
            with open(self.log_path(), "rb") as f:
                sys.stderr.write(f.read().decode(errors="replace")[-4000:])
        except OSError:
            pass


def ports_free(base, n):
    """Whether a cluster's Kafka ports base..base+n and its metrics ports
    (base+100..) are all free on 127.0.0.1."""
    for p in list(range(base, base + n)) + list(range(base + 100, base + 100 + n)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def contiguous(offsets_by_partition, what):
    """Offsets of each partition are exactly 0..n-1."""
    for p, offs in offsets_by_partition.items():
        offs = sorted(offs)
        check(offs == list(range(len(offs))), f"{what}: partition {p} offsets not contiguous from 0 "
              f"(first {offs[:3]}, last {offs[-3:]}, {len(offs)} in all)")


def check_resumed(first, rest, last, value_at):
    """After a restart, a group consumer read `rest` having read `first` and
    committed `last[p] + 1`: it resumed at the commits, read nothing
    twice, kept each partition's order, and together they read exactly
    what was produced (`value_at`: (partition, offset) -> value)."""
    by_part = {}
    for part, off, val in first + rest:
        by_part.setdefault(part, []).append(off)
        check(value_at[(part, off)] == val, f"p{part} offset {off}: value differs")
    for part, offs in by_part.items():
        check(offs == sorted(offs), f"partition {part}: out of order")
        check(len(set(offs)) == len(offs), f"partition {part}: a message read twice")
    firsts = {}
    for part, off, _ in rest:
        firsts.setdefault(part, off)
    for part, off in firsts.items():
        check(off == last.get(part, -1) + 1,
              f"partition {part} resumed at {off}, committed {last.get(part, -1) + 1}")
    check(sorted((p, o) for p, o, _ in first + rest) == sorted(value_at), "lost or extra messages")
