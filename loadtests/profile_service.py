"""Where a request's CPU goes in our service: py-spy over the gunicorn workers under load.

    make profile [PROFILE_ARGS="--model iris-rf --rows 1 --seconds 15"]
    .venv/bin/python loadtests/profile_service.py [--py-spy .venv/bin/py-spy]

Starts our stack like the benchmark does (loadtests/servers.py), loads it with
the benchmark's wrk script (cache misses by default), and samples every
gunicorn worker with ``py-spy record --subprocesses --nonblocking``. Writes the
collapsed stacks (``profile-*.txt``; speedscope and flamegraph.pl read them)
and prints, over all samples where a worker was on the CPU:

- inclusive share by package / service module (a stack counts once per
  package it passes through), the answer to "what does the stack add";
- inclusive share of each function in ``service/``;
- self time of the hottest functions.

Before py-spy attaches, one measured run without it gives the request's cost split
by process from /proc (nginx, gunicorn workers, redis-server: CPU µs per request)
and nginx's own clock from its access log: ``$request_time`` (client in to client
out) against ``$upstream_response_time`` (nginx to gunicorn and back) and
``$upstream_connect_time`` (a new upstream connection per request with sync
workers). After py-spy, ``loadtests/request_breakdown.py`` times each step of the
app in-process. Together they are the table in docs/benchmarks.md, "Where one
request's microseconds go".
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402
import statistics  # noqa: E402

from loadtests import procstat, request_breakdown  # noqa: E402
from loadtests.bench import BENCH, RESULTS, ensure_store, wrk  # noqa: E402
from loadtests.servers import ROOT, OurStack  # noqa: E402
from tools.stack import Command  # noqa: E402


def cost_split(server: OurStack, url: str, args) -> str:  # noqa: ANN001 - argparse namespace
    """CPU per request of each process on the path and nginx's timings, one run, no py-spy."""
    log = server.nginx.access_log
    log.write_text("")  # nginx appends (O_APPEND): only this run's requests remain
    roles = {server.nginx.pid: "nginx", server.gunicorn.pid: "gunicorn"}
    if server.redis is not None:
        roles[server.redis.pid] = "redis-server"
    groups = {role: procstat.tree([pid]) for pid, role in roles.items()}
    before = {role: procstat.cpu_sample(pids) for role, pids in groups.items()}
    result = wrk(url, args.protocol, args.rows, args.mode, 7, args.seconds, args.connections)
    n = result["requests"]
    lines = [
        f"One run without py-spy: {n} requests, "
        f"{n / (result['duration_us'] / 1e6):.0f} req/s, {args.connections} connections",
        "",
        "| where | µs per request |",
        "|---|--:|",
    ]
    total = 0.0
    for role, pids in groups.items():
        cpu = procstat.cpu_used(before[role], procstat.cpu_sample(pids)) * 1e6 / max(1, n)
        total += cpu
        label = "gunicorn master + workers" if role == "gunicorn" else role
        lines.append(f"| CPU: {label} | {cpu:,.0f} |")
    lines.append(f"| CPU: all server processes | {total:,.0f} |")
    times = {"request_time": [], "upstream_response_time": [], "upstream_connect_time": []}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("status") != 200:
            continue
        for key in times:
            value = str(entry.get(key, "-")).split(",")[-1].strip()
            if value not in ("-", ""):
                times[key].append(float(value) * 1e6)
    for key, values in times.items():
        if values:
            lines.append(
                f"| wall, nginx `${key}`: mean / median | "
                f"{statistics.fmean(values):,.0f} / {statistics.median(values):,.0f} |"
            )
    if times["request_time"] and times["upstream_response_time"]:
        gap = statistics.fmean(times["request_time"]) - statistics.fmean(
            times["upstream_response_time"]
        )
        lines.append(
            f"| wall, in nginx only (request_time - upstream_response_time) | {gap:,.0f} |"
        )
    return "\n".join(lines)


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def package_of(path: str) -> str:
    """'sklearn', 'werkzeug', 'service.cache', '<stdlib json>' ... for a frame's file."""
    p = path.replace("\\", "/")
    if "/site-packages/" in p:
        return p.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if p.startswith(("service/", str(ROOT / "service"))) or "/service/" in p:
        return "service." + p.rsplit("/", 1)[1].removesuffix(".py")
    if "/lib/python3" in p:
        mod = p.split("/lib/python3", 1)[1].split("/", 2)[-1]
        return "<stdlib " + mod.split("/", 1)[0].removesuffix(".py") + ">"
    return p.rsplit("/", 1)[-1]


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """[(frames root->leaf as (func, file)), count] from py-spy's raw format."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        body, _, count = line.rpartition(" ")
        frames = []
        for raw in body.split(";"):
            m = FRAME.match(raw.strip())
            if m:
                frames.append((m.group("func"), m.group("file")))
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def summarise(stacks: list[tuple[list[tuple[str, str]], int]], top: int = 25) -> str:
    total = sum(c for _, c in stacks) or 1
    by_package: Counter[str] = Counter()
    by_service_func: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks:
        for pkg in {package_of(f) for _, f in frames}:
            by_package[pkg] += count
        seen = set()
        for func, f in frames:
            if package_of(f).startswith("service."):
                key = f"{package_of(f)}.{func}"
                if key not in seen:
                    seen.add(key)
                    by_service_func[key] += count
        func, f = frames[-1]
        self_time[f"{func} ({package_of(f)})"] += count

    def block(title: str, counter: Counter[str]) -> list[str]:
        lines = [f"\n{title}", "| share | samples | what |", "|--:|--:|---|"]
        for key, c in counter.most_common(top):
            lines.append(f"| {100 * c / total:5.1f}% | {c} | {key} |")
        return lines

    out = [f"{total} samples with a worker on the CPU"]
    out += block("Inclusive, by package or service module:", by_package)
    out += block("Inclusive, functions in service/:", by_service_func)
    out += block("Self time (the leaf frame):", self_time)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--py-spy", default=str(ROOT / ".venv" / "bin" / "py-spy"))
    p.add_argument("--model", default="iris")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--seconds", type=int, default=12)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--mode", choices=["unique", "repeat"], default="unique")
    p.add_argument("--direct", action="store_true", help="load gunicorn, not nginx")
    p.add_argument("--runtime", default="auto", help="PREDICTOR_RUNTIME (default: the shipped one)")
    p.add_argument("--protocol", choices=["seed", "v1", "v2"], default="seed")
    p.add_argument("--cache", choices=["redis", "local", "off"], default="redis")
    p.add_argument(
        "--idle", action="store_true", help="sample blocked threads too (wall time, not CPU)"
    )
    p.add_argument("--store", type=Path, default=BENCH / "store")
    p.add_argument("--no-breakdown", action="store_true", help="skip the in-process step table")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    ensure_store(args.store, [args.model])
    server = OurStack(
        BENCH / "run",
        args.model,
        args.store.resolve(),
        args.runtime,
        args.protocol,
        cache=args.cache,
    )
    server.start()
    spy: Command | None = None
    try:
        server.wait_ready(args.model, direct=args.direct)
        url = server.url(args.model, direct=args.direct)
        wrk(url, args.protocol, args.rows, args.mode, 99, 2, args.connections)  # warm-up
        split = "" if args.direct else cost_split(server, url, args)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        raw = args.out / f"profile-{args.model}-{args.rows}-{args.mode}-{stamp}.txt"
        spy = Command(
            BENCH / "run", "py-spy",
            [
                args.py_spy, "record", "--pid", str(server.gunicorn.pid), "--subprocesses",
                "--nonblocking", "--rate", str(args.rate), "--duration", str(args.seconds),
                "--format", "raw", "--output", str(raw), *(["--idle"] if args.idle else []),
            ],
        ).start()  # fmt: skip
        result = {}

        def load() -> None:
            result.update(
                wrk(url, args.protocol, args.rows, args.mode, 1, args.seconds, args.connections)
            )

        time.sleep(0.5)  # py-spy attaches first
        loader = threading.Thread(target=load)
        loader.start()
        loader.join()
        finished = spy.wait(args.seconds + 60)
        if not finished or spy.proc.returncode != 0 or not raw.exists():
            print(spy.log_tail(60), file=sys.stderr)
            return 1
    finally:
        if spy is not None:
            spy.stop()
        server.stop()
    rps = result["requests"] / (result["duration_us"] / 1e6)
    print(
        f"{args.model}, {args.rows} row(s), {args.mode}, "
        f"{'gunicorn direct' if args.direct else 'through nginx'}, runtime {args.runtime}, "
        f"cache {args.cache}: "
        f"{rps:.0f} req/s under py-spy (sampling slows it), "
        f"p50 {result['p50_us'] / 1000:.2f} ms"
    )
    print(summarise(parse_collapsed(raw.read_text())))
    print(f"\ncollapsed stacks: {raw}")
    if split:
        print("\n" + split)
    if not args.no_breakdown:
        print("\nIn-process, each step of the app (loadtests/request_breakdown.py):")
        print(
            request_breakdown.table(request_breakdown.breakdown(args.store.resolve(), args.model))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
