"""How fast Redis Sentinel fails over with the timings docs/replication.md plans, and what
`WAIT` costs and keeps: the facts the replication design rests on, measured on this machine
before the operator builds it.

Starts, on loopback ports in a temporary directory, one primary, two replicas and three
Sentinels (`redis-server`, `redis-server --sentinel`), then BENCH_KILLS times (default 5):
a writer pushes to a list through whatever primary the Sentinels name, confirming each push
with `WAIT 1`; the primary is killed with SIGKILL; the writer keeps going. Reported per kill:
the time from the kill to the first confirmed push on the new primary, and the confirmed
pushes missing there (must be 0). The killed server comes back as a replica of the new
primary (asked of the Sentinels first, as the planned init step does) before the next kill.
Also reported: the cost of `WAIT 1` after a transaction of 500 1.5 kB pushes.

Run: $(e2e/venv.sh)/bin/python e2e/bench/sentinel_timing.py
Env: BENCH_KILLS (5), BENCH_DOWN_AFTER_MS (2000), BENCH_FAILOVER_TIMEOUT_MS (10000).
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

KILLS = int(os.environ.get("BENCH_KILLS", "5"))
DOWN_AFTER = int(os.environ.get("BENCH_DOWN_AFTER_MS", "2000"))
FAILOVER_TIMEOUT = int(os.environ.get("BENCH_FAILOVER_TIMEOUT_MS", "10000"))
MASTER = "broker"
PASSWORD = "bench-only-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, root, name, args):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.args = args
        self.proc = None

    def start(self, extra=()):
        self.proc = subprocess.Popen(
            ["redis-server", *self.args, *extra],
            cwd=self.dir,
            stdout=open(os.path.join(self.dir, "log"), "ab"),
            stderr=subprocess.STDOUT,
        )

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def redis_args(port):
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--requirepass", PASSWORD, "--masterauth", PASSWORD,
        "--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
    ]


def sentinel_conf(path, port, primary_port):
    with open(path, "w") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(len(values) * p + 0.999999) - 1))]


def main():
    if not shutil.which("redis-server"):
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    root = tempfile.mkdtemp(prefix="sentinel-timing-")
    ports = [free_port() for _ in range(3)]
    nodes = [Node(root, f"redis-{i}", redis_args(p)) for i, p in enumerate(ports)]
    sentinels = []
    try:
        nodes[0].start()
        for n in nodes[1:]:
            n.start(["--replicaof", "127.0.0.1", str(ports[0])])
        for i in range(3):
            port = free_port()
            s = Node(root, f"sentinel-{i}", ["sentinel.conf", "--sentinel"])
            sentinel_conf(os.path.join(s.dir, "sentinel.conf"), port, ports[0])
            s.port = port
            s.start()
            sentinels.append(s)
        sentinel = redis.Sentinel(
            [("127.0.0.1", s.port) for s in sentinels], socket_timeout=0.2
        )

        def primary_port():
            return sentinel.discover_master(MASTER)[1]

        def synced():
            info = redis.Redis(port=primary_port(), password=PASSWORD).info("replication")
            return info.get("connected_slaves") == 2 and all(
                info[f"slave{i}"]["state"] == "online" for i in range(2)
            )

        wait_for("two replicas online", synced)
        wait_for(
            "the Sentinels to know each other",
            lambda: all(
                int(redis.Redis(port=s.port).sentinel_master(MASTER)["num-other-sentinels"]) == 2
                for s in sentinels
            ),
        )

        wait_costs = measure_wait(redis.Redis(port=primary_port(), password=PASSWORD))

        rows = []
        pushed = 0
        for kill in range(KILLS):
            port = primary_port()
            victim = next(n for n, p in zip(nodes, ports) if p == port)
            conn = redis.Redis(port=port, password=PASSWORD, socket_timeout=0.2)
            confirmed = []
            for _ in range(200):
                pushed += 1
                conn.lpush("q", pushed)
                if conn.execute_command("WAIT", 1, 1000) >= 1:
                    confirmed.append(pushed)
            killed = time.monotonic()
            victim.kill()
            # Keep pushing through whatever Sentinel names, as a client that follows it.
            first_ok = None
            while first_ok is None:
                try:
                    now_port = primary_port()
                    if now_port == port:
                        time.sleep(0.01)
                        continue
                    c = redis.Redis(port=now_port, password=PASSWORD, socket_timeout=0.2)
                    pushed += 1
                    c.lpush("q", pushed)
                    if c.execute_command("WAIT", 1, 1000) >= 1:
                        confirmed.append(pushed)
                        first_ok = time.monotonic() - killed
                except redis.RedisError:
                    time.sleep(0.01)
                if time.monotonic() - killed > 60:
                    sys.exit("no new primary within 60 s")
            new = redis.Redis(port=now_port, password=PASSWORD)
            present = {int(v) for v in new.lrange("q", 0, -1)}
            lost = [p for p in confirmed if p not in present]
            # The killed server comes back as a replica of the primary the Sentinels name.
            victim.start(["--replicaof", "127.0.0.1", str(primary_port())])
            wait_for("the old primary to rejoin as a replica", synced, timeout=60)
            rows.append((kill + 1, first_ok, len(lost)))

        print(f"Sentinel failover on loopback (down-after {DOWN_AFTER} ms, failover-timeout "
              f"{FAILOVER_TIMEOUT} ms, quorum 2 of 3, 2 replicas)")
        print("| kill | kill -> first confirmed push on the new primary | confirmed pushes lost |")
        print("|---|---|---|")
        for kill, took, lost in rows:
            print(f"| {kill} | {took:.2f} s | {lost} |")
        times = [r[1] for r in rows]
        print(f"without a primary: p50 {statistics.median(times):.2f} s, max {max(times):.2f} s")
        print(f"WAIT 1 after a transaction of 500 1.5 kB pushes ({len(wait_costs)} times): "
              f"p50 {percentile(wait_costs, 0.5) * 1000:.2f} ms, "
              f"p99 {percentile(wait_costs, 0.99) * 1000:.2f} ms")
    finally:
        for n in nodes + sentinels:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure_wait(conn):
    message = "x" * 1500
    costs = []
    for _ in range(200):
        pipe = conn.pipeline(transaction=True)
        pipe.lpush("wait-cost", *([message] * 500))
        pipe.execute()
        start = time.perf_counter()
        conn.execute_command("WAIT", 1, 1000)
        costs.append(time.perf_counter() - start)
        conn.delete("wait-cost")
    return costs


if __name__ == "__main__":
    main()
