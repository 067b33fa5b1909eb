#!/usr/bin/env bash
# latmap ping against fping on the same loopback targets, in the same run.
#
#   benches/prober-vs-fping.sh [SIZES...]        (default: 1000 5000 10000)
#   RUNS=5 LATMAP=target/release/latmap benches/prober-vs-fping.sh 1000
#
# Both tools probe the same N addresses of 127.0.0.0/8 with 3 probes each, gap 0,
# period 20 ms and timeout 500 ms (fping -q -C 3 -i 0 -p 20 -t 500; latmap ping -q -C
# -c 3 -i 0s -p 20ms -t 500ms), alternating, RUNS times per size (default 5). For each
# tool it prints the median over the runs of: wall time, CPU (user + system), CPU per
# probe, peak RSS, replies, and the median and p99 over targets of each target's median
# RTT, plus the smallest sample seen. Then the latmap/fping ratios and the targets of
# docs/performance.md, each PASS or FAIL. Exit 1 if any target fails.
#
# Peak RSS includes each tool's start-up: the pages of its program and libraries
# (about 7.5 MiB for latmap, whose binary holds every subcommand; 1.6 MiB for fping).
# So the script also shows the RSS beyond start-up (peak minus the peak of probing one
# target once), which is what grows with the targets; the 2x target applies to that at
# every size, and to the whole peak at 10,000 targets.
#
# Needs fping (Debian's package; installed with apt-get when missing and root) and
# python3. Sends only to loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

# GNU time measures each tool's own peak RSS: a child forked from python would count
# python's pages as its own until it execs.
for need in fping:fping /usr/bin/time:time; do
    if ! command -v "${need%%:*}" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need#*:}"; } >/dev/null
        else
            echo "${need%%:*} is missing and this is not root: apt-get install ${need#*:}" >&2
            exit 2
        fi
    fi
done
LATMAP=${LATMAP:-target/release/latmap}
if [ -z "${LATMAP_NO_BUILD:-}" ] && [ "$LATMAP" = target/release/latmap ]; then
    cargo build --release --locked --quiet
fi
export LATMAP RUNS=${RUNS:-5}
[ $# -gt 0 ] || set -- 1000 5000 10000

exec python3 - "$@" <<'PY'
import os, statistics, subprocess, sys, tempfile

latmap = os.environ["LATMAP"]
runs = int(os.environ["RUNS"])
sizes = [int(a) for a in sys.argv[1:]]
COUNT = 3

def targets(n):
    # 127.A.B.C with C in 1..250, skipping 127.0.0.x (the host's own) for a clean set.
    out = []
    for i in range(n):
        a, b = divmod(i, 250)
        a += 1
        out.append(f"127.{a // 250}.{a % 250}.{b + 1}")
    return out

def run(cmd):
    """Runs cmd; returns (wall s, cpu s, peak RSS KiB, stdout+stderr text)."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as t:
        p = subprocess.run(["/usr/bin/time", "-q", "-o", t.name, "-f", "%e %U %S %M"] + cmd,
                           stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read().decode()
        fields = t.read().split()
    if p.returncode not in (0, 1) or len(fields) != 4:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{text[-2000:]}")
    wall, user, sys_, rss = map(float, fields)
    return wall, user + sys_, rss, text

def per_target(text):
    """Lines 'TARGET : ... : r1 r2 r3' (latmap -C) or 'TARGET : r1 r2 r3' (fping -C):
    each target's samples in ms ('-' lost)."""
    res = {}
    for line in text.splitlines():
        if " : " not in line:
            continue
        name = line.split(" : ", 1)[0].strip()
        rtts = line.rsplit(" : ", 1)[1].split()
        vals = [float(x) for x in rtts if x != "-"]
        res[name] = vals
    return res

def summarise(samples):
    p50s = sorted(statistics.median(v) for v in samples.values() if v)
    replies = sum(len(v) for v in samples.values())
    floor = min((min(v) for v in samples.values() if v), default=float("nan"))
    p99 = p50s[min(len(p50s) - 1, int(round(0.99 * (len(p50s) - 1))))] if p50s else float("nan")
    return replies, (statistics.median(p50s) if p50s else float("nan")), p99, floor

def tools(path):
    return {
        "fping": ["fping", "-q", "-C", str(COUNT), "-i", "0", "-p", "20", "-t", "500", "-f", path],
        "latmap": [latmap, "ping", "-q", "-C", "-c", str(COUNT), "-i", "0s", "-p", "20ms", "-t", "500ms", "-f", path],
    }

def baseline(name):
    """Peak RSS (KiB) of the tool probing one target once: its start-up cost."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("127.0.0.1\n")
        f.flush()
        cmd = tools(f.name)[name]
        cmd[cmd.index(str(COUNT)) if name == "fping" else cmd.index("-c") + 1] = "1"
        return statistics.median(run(cmd)[2] for _ in range(3))

base = {name: baseline(name) for name in ("fping", "latmap")}
failures = []
print(f"start-up RSS (one target, one probe): fping {base['fping'] / 1024:.1f} MiB, "
      f"latmap {base['latmap'] / 1024:.1f} MiB")
print(f"{COUNT} probes per target, gap 0, period 20 ms, timeout 500 ms; median of {runs} alternating runs")
for n in sizes:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(targets(n)) + "\n")
        path = f.name
    results = {"fping": [], "latmap": []}
    for _ in range(runs):
        for name, cmd in tools(path).items():
            wall, cpu, rss, text = run(cmd)
            replies, med, p99, floor = summarise(per_target(text))
            results[name].append((wall, cpu, rss, replies, med, p99, floor))
    os.unlink(path)
    print(f"\n{n} targets, {n * COUNT} probes")
    print(f"{'tool':8} {'wall s':>8} {'CPU s':>8} {'CPU/probe':>10} {'RSS MiB':>8} {'replies':>8} {'p50 med':>9} {'p50 p99':>9} {'min':>7}")
    med = {}
    for name, rows in results.items():
        cols = list(zip(*rows))
        m = [statistics.median(c) for c in cols[:6]] + [min(cols[6])]
        med[name] = m
        wall, cpu, rss, replies, p50, p99, floor = m
        print(f"{name:8} {wall:8.3f} {cpu:8.3f} {cpu / (n * COUNT) * 1e6:8.1f}µs {rss / 1024:8.1f} {replies:8.0f} "
              f"{p50 * 1000:7.1f}µs {p99 * 1000:7.1f}µs {floor * 1000:5.1f}µs")
    f_, l_ = med["fping"], med["latmap"]
    cpu_ratio, rss_ratio = l_[1] / f_[1], l_[2] / f_[2]
    growth = max(l_[2] - base["latmap"], 1) / max(f_[2] - base["fping"], 1)
    p50_diff = (l_[4] - f_[4]) * 1000
    print(f"latmap/fping: wall {l_[0] / f_[0]:.2f}x, CPU {cpu_ratio:.2f}x, peak RSS {rss_ratio:.2f}x "
          f"(beyond start-up {growth:.2f}x); median p50 {p50_diff:+.1f} µs")
    checks = [
        ("CPU at most 1.0x fping's", cpu_ratio <= 1.0),
        ("RSS beyond start-up at most 2x fping's", growth <= 2.0),
        ("median per-target p50 within 20 µs of fping's", abs(p50_diff) <= 20),
        ("no sample below the loopback floor (no 0 µs reading)", min(r[6] for r in results["latmap"]) > 0),
    ]
    if n >= 10000:
        checks.append(("peak RSS at most 2x fping's", rss_ratio <= 2.0))
        checks.append(("zero loss at 10,000 targets", min(r[3] for r in results["latmap"]) == n * COUNT))
    for what, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")
        if not ok:
            failures.append(f"{n}: {what}")
if failures:
    print("\nfailed: " + "; ".join(failures))
    sys.exit(1)
PY
