//! Continuous operation on loopback: `latmap serve` and `latmap agent` as real processes
//! over real sockets, with the lab.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use latmap::config::ProbeKind;
use latmap::probe::ProberHealth;
use latmap::remote::wire::Push;
use latmap::report::{PathEntry, REPORT_SCHEMA, RegionInfo, RegionReport};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{Dir, timing_lock};
use crate::service::{Answer, Proc, free_port, get, http, sleep_past_an_epoch, until, until_or};

pub(crate) const TOKEN: &str = "0123456789abcdef-test-token";

/// A three-region matrix lab with ephemeral reflector ports (each agent runs its own
/// copy of the lab) and short sweeps.
pub(crate) fn lab(dir: &Dir) {
    dir.write("rtt.csv", ",a,b,c\na,,20,30\nb,20,,40\nc,30,40,\n");
    dir.write(
        "lab.toml",
        "[probe]\ncount = 5\ninterval = \"10ms\"\ntimeout = \"500ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\n",
    );
    dir.write("token", &format!("{TOKEN}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
}

pub(crate) fn serve(dir: &Dir, port: u16, extra: &[&str]) -> (Proc, SocketAddr) {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--data",
        "data",
        "--token-file",
        "token",
    ];
    args.extend_from_slice(extra);
    // Only what this server logs: an earlier one in this folder logged to the file too.
    let before = std::fs::metadata(dir.join("serve.log")).map_or(0, |m| m.len() as usize);
    let mut proc = Proc::start(dir.path(), "serve.log", &args);
    // Port 0: the server picks one and says which, so no other test can hold it.
    let addr: SocketAddr = if port == 0 {
        until(
            Duration::from_secs(30),
            "the server says its address",
            || {
                assert!(
                    proc.child.try_wait().expect("wait").is_none(),
                    "the server exited:\n{}",
                    proc.log()
                );
                let log = proc.log();
                let log = log.get(before..)?;
                let at = log.find("serving on http://")? + "serving on http://".len();
                log[at..].split(',').next()?.trim().parse().ok()
            },
        )
    } else {
        listen.parse().expect("address")
    };
    until(
        Duration::from_secs(30),
        "the server answers /healthz",
        || {
            http(addr, "GET", "/healthz", &[], None)
                .ok()
                .filter(|a| a.status == 200)
        },
    );
    (proc, addr)
}

pub(crate) fn agent(dir: &Dir, region: &str, addr: SocketAddr, sweeps: &str) -> Proc {
    let url = format!("http://{addr}");
    let spool = format!("spool/{region}");
    Proc::start(
        dir.path(),
        &format!("agent-{region}.log"),
        &[
            "--config",
            "lab.toml",
            "agent",
            "--region",
            region,
            "--aggregator",
            &url,
            "--token-file",
            "token",
            "--every",
            "2s",
            "--sweeps",
            sweeps,
            "--spool",
            &spool,
            "--retry-max",
            "2s",
        ],
    )
}

pub(crate) fn runs(addr: SocketAddr) -> Vec<Value> {
    let a = get(addr, "/v1/runs");
    assert_eq!(a.status, 200, "{}", a.body);
    a.json().as_array().cloned().unwrap_or_default()
}

pub(crate) fn complete(runs: &[Value]) -> usize {
    runs.iter().filter(|r| r["complete"] == true).count()
}

pub(crate) fn pending(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn three_agents_fill_complete_runs_and_a_server_outage_loses_nothing() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let port = free_port();
    let (server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    // A run is complete when the three agents report the same epoch. Each agent sweeps
    // at the epochs (multiples of --every, 2 s) that follow its own start, so agents
    // started just before a boundary and just after it would sweep epochs one apart
    // (on a loaded machine the three starts spread over 0.1-0.2 s). Started 100 ms
    // after a boundary, they share their first epoch unless a start takes 1.9 s.
    sleep_past_an_epoch(Duration::from_secs(2), Duration::from_millis(100));
    let mut agents: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|r| agent(&dir, r, addr, "4"))
        .collect();
    // The first sweep lands as one complete run.
    until(Duration::from_secs(60), "a first complete run", || {
        (complete(&runs(addr)) >= 1).then_some(())
    });
    let first = runs(addr)[0]["id"].as_str().expect("id").to_string();
    // Stop the server; the agents sweep twice meanwhile and keep the reports.
    server.signal(Signal::SIGTERM);
    let mut server = server;
    assert!(
        server.wait(Duration::from_secs(30)).success(),
        "{}",
        server.log()
    );
    until(
        Duration::from_secs(60),
        "two sweeps spooled by every agent",
        || {
            ["a", "b", "c"]
                .iter()
                .all(|r| pending(&dir.join(&format!("spool/{r}"))) >= 2)
                .then_some(())
        },
    );
    let restarted = Instant::now();
    let (_server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    for a in &mut agents {
        let status = a.wait(Duration::from_secs(90));
        assert!(status.success(), "agent failed:\n{}", a.log());
    }
    // Every agent swept the same four epochs (else no four runs can be complete: an
    // agent that started late, or skipped an epoch because its sweep ran past the next).
    let swept: Vec<Vec<String>> = agents.iter().map(|a| swept_epochs(&a.log())).collect();
    assert!(
        swept.iter().all(|e| e.len() == 4 && *e == swept[0]),
        "the agents swept different epochs {swept:?}:\n{}",
        outage_logs(&dir, &runs(addr))
    );
    // The agents exited once the server had stored every report (acknowledged), so
    // what is left is assembly: an epoch is built as soon as its last report is stored
    // (no --deadline wait), in milliseconds; at worst one of its reports reaches the
    // assembler after the build and it is built once more a --batch (2 s) later. 30 s
    // is that with a wide margin for a loaded machine.
    let seen = std::cell::RefCell::new(Vec::new());
    let all = until_or(
        Duration::from_secs(30),
        "four complete runs",
        || outage_logs(&dir, &seen.borrow()),
        || {
            let r = runs(addr);
            seen.replace(r.clone());
            (complete(&r) == 4).then_some(r)
        },
    );
    eprintln!(
        "after the restart, every spooled report was delivered and assembled in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    // One run per epoch, 2 s apart, each with all three regions and their paths.
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0]["id"], first.as_str());
    let epochs: Vec<DateTime<Utc>> = all
        .iter()
        .map(|r| {
            r["epoch"]
                .as_str()
                .expect("epoch")
                .parse()
                .expect("RFC 3339")
        })
        .collect();
    for w in epochs.windows(2) {
        assert_eq!((w[1] - w[0]).num_seconds(), 2, "{epochs:?}");
    }
    for r in &all {
        assert_eq!(r["reported"], serde_json::json!(["a", "b", "c"]), "{r}");
        let id = r["id"].as_str().expect("id");
        let run = get(addr, &format!("/v1/runs/{id}")).json();
        assert_eq!(run["id"], id);
        assert_eq!(run["paths"].as_array().map(Vec::len), Some(6), "{id}");
    }
    // Nothing is left in the spools, nothing was refused.
    for r in ["a", "b", "c"] {
        assert_eq!(pending(&dir.join(&format!("spool/{r}"))), 0);
        assert_eq!(pending(&dir.join(&format!("spool/{r}/rejected"))), 0);
    }
    // The views of the latest run.
    let latest = get(addr, "/v1/runs/latest").json();
    assert_eq!(latest["id"], all[3]["id"]);
    for view in ["rtt", "loss", "delta"] {
        let svg = get(addr, &format!("/v1/runs/latest/heatmap.svg?view={view}"));
        assert_eq!(svg.status, 200, "{view}: {}", svg.body);
        assert!(svg.body.starts_with("<svg") || svg.body.starts_with("<?xml"));
    }
    let md = get(addr, "/v1/runs/latest/report.md");
    assert_eq!(md.status, 200);
    assert_eq!(
        md.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    let metrics = get(addr, "/metrics").body;
    assert!(
        metrics
            .contains("latmap_path_rtt_p50_seconds{source=\"a\",target=\"c\",kind=\"udp\"} 0.03"),
        "{metrics}"
    );
    assert!(metrics.contains("latmap_agent_last_report_timestamp_seconds{region=\"b\"}"));
    promtool_check(&metrics);
}

/// The epochs an agent swept, from its log ("R: report of epoch E done").
fn swept_epochs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("report of epoch ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// What the outage test's processes logged, and the runs last listed: why a wait failed.
fn outage_logs(dir: &Dir, runs: &[Value]) -> String {
    let mut out = format!("runs listed last: {runs:?}\n");
    for name in ["serve.log", "agent-a.log", "agent-b.log", "agent-c.log"] {
        let log = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        out.push_str(&format!("--- {name}:\n{log}\n"));
    }
    out
}

pub(crate) fn report(region: &str, fleet: &[&str], samples: usize) -> RegionReport {
    let t: DateTime<Utc> = "2026-11-26T05:00:00.25Z".parse().expect("time");
    RegionReport {
        schema: REPORT_SCHEMA.into(),
        region: region.into(),
        started_at: t,
        finished_at: t,
        regions: fleet
            .iter()
            .map(|n| RegionInfo {
                name: n.to_string(),
                location: None,
            })
            .collect(),
        prober: ProberHealth::default(),
        paths: fleet
            .iter()
            .filter(|&&n| n != region)
            .map(|n| {
                PathEntry::from_samples(
                    region,
                    n,
                    ProbeKind::Udp,
                    "127.0.0.1:9",
                    (0..samples).map(|i| Some(20_000 + i as u64 % 7)).collect(),
                )
            })
            .collect(),
    }
}

/// `report` as the sweep of `epoch` makes it: starting 250 ms after the epoch, as an
/// agent's does (a server refuses a start well before the epoch), and finishing then
/// at the earliest.
pub(crate) fn at_epoch(epoch: &str, mut report: RegionReport) -> RegionReport {
    let epoch: DateTime<Utc> = epoch.parse().expect("epoch");
    report.started_at = epoch + chrono::Duration::milliseconds(250);
    report.finished_at = report.finished_at.max(report.started_at);
    report
}

/// The push of `report` (see [`at_epoch`]) for the sweep of `epoch`.
pub(crate) fn push_body(epoch: &str, report: RegionReport) -> Vec<u8> {
    let report = at_epoch(epoch, report);
    serde_json::to_vec(&Push::new(epoch.parse().expect("epoch"), report)).expect("JSON")
}

pub(crate) fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    http(addr, "POST", "/v1/reports", headers, Some(body)).expect("POST")
}

pub(crate) const BEARER: &str = "Bearer 0123456789abcdef-test-token";
pub(crate) const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn pushes_are_authenticated_limited_validated_and_stored_once() {
    let dir = Dir::new();
    lab(&dir);
    let (_server, addr) = serve(
        &dir,
        free_port(),
        &["--deadline", "1s", "--max-body", "65536"],
    );
    let epoch = "2026-11-26T05:00:00Z";
    let good = push_body(epoch, report("a", &["a", "b"], 10));
    let auth = ("Authorization", BEARER);
    let refused = |a: &Answer, status: u16, reason: &str| {
        assert_eq!(a.status, status, "{}", a.body);
        let e = a.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(reason), "{status}: {e}");
    };
    // Authentication comes first.
    let a = post(addr, &[JSON], &good);
    refused(&a, 401, "missing Authorization");
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"latmap\"")
    );
    for wrong in [
        "Bearer 0123456789abcdef-test-tokeN",
        "Bearer ",
        "Basic abc",
        "Bearer 0123456789abcdef-test-token2",
    ] {
        refused(
            &post(addr, &[("Authorization", wrong), JSON], &good),
            401,
            "",
        );
    }
    // Then the body: its type, size, syntax and meaning.
    refused(
        &post(addr, &[auth, ("Content-Type", "text/plain")], &good),
        415,
        "must be JSON",
    );
    let big = http(
        addr,
        "POST",
        "/v1/reports",
        &[auth, JSON, ("Content-Length", "1000000")],
        None,
    )
    .expect("POST");
    refused(&big, 413, "limit of 65536 bytes");
    let huge = push_body(epoch, report("a", &["a", "b"], 20_000));
    refused(&post(addr, &[auth, JSON], &huge), 413, "limit");
    // A body that breaks (a bad chunk; fewer bytes than declared, then the end) is
    // malformed, not too large.
    for (framing, body) in [
        ("Transfer-Encoding: chunked", "zz\r\n{}\r\n0\r\n\r\n"),
        ("Content-Length: 100", "{}"),
    ] {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let head = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n{body}"
        );
        s.write_all(head.as_bytes()).expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("\"malformed\""),
            "{framing}: {answer}"
        );
        assert!(answer.contains("could not be read"), "{framing}: {answer}");
    }
    refused(
        &post(addr, &[auth, JSON], b"{\"schema\": \"latmap.push/1\", "),
        400,
        "not a latmap.push/1",
    );
    refused(
        &post(addr, &[auth, JSON], b"[1, 2]"),
        400,
        "not a latmap.push/1",
    );
    let mut v: Value = serde_json::from_slice(&good).expect("JSON");
    v["region"] = "b".into();
    refused(
        &post(addr, &[auth, JSON], v.to_string().as_bytes()),
        400,
        "its report is of region",
    );
    let foreign = push_body(epoch, {
        let mut r = report("a", &["a", "b"], 10);
        r.paths[0].source = "b".into();
        r
    });
    refused(
        &post(addr, &[auth, JSON], &foreign),
        400,
        "has a path from \"b\"",
    );
    let evil = push_body(epoch, report("../../x", &["../../x", "b"], 10));
    refused(&post(addr, &[auth, JSON], &evil), 400, "contains '/'");
    refused(
        &post(
            addr,
            &[auth, JSON],
            &push_body("2026-11-26T05:00:00.5Z", report("a", &["a", "b"], 10)),
        ),
        400,
        "whole second",
    );
    let mut v: Value = serde_json::from_slice(&good).expect("JSON");
    v["schema"] = "latmap.push/2".into();
    refused(
        &post(addr, &[auth, JSON], v.to_string().as_bytes()),
        400,
        "not supported",
    );
    // Nothing of the refused pushes was stored.
    assert_eq!(
        std::fs::read_dir(dir.join("data/reports"))
            .expect("reports")
            .count(),
        0
    );

    // Accepted once; a resend is acknowledged and not stored again; another report
    // under the same key conflicts.
    let a = post(addr, &[auth, JSON], &good);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["status"], "stored");
    let a = post(
        addr,
        &[auth, ("Content-Type", "application/json; charset=utf-8")],
        &good,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "duplicate");
    let other = push_body(epoch, report("a", &["a", "b"], 11));
    refused(&post(addr, &[auth, JSON], &other), 409, "already stored");
    let stored: Vec<_> = std::fs::read_dir(dir.join("data/reports/20261126T050000Z"))
        .expect("epoch folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored, ["a.json"]);

    // Region b never reports: after the deadline the run is assembled with b as "no
    // data"; b's late report re-assembles it complete.
    let r = until(
        Duration::from_secs(30),
        "the run after the deadline",
        || runs(addr).into_iter().next(),
    );
    assert_eq!(r["complete"], false, "{r}");
    assert_eq!(r["reported"], serde_json::json!(["a"]));
    let run = get(addr, "/v1/runs/20261126T050000Z").json();
    assert_eq!(run["regions"][1]["reported"], false, "{run}");
    let late = push_body(epoch, report("b", &["a", "b"], 10));
    assert_eq!(post(addr, &[auth, JSON], &late).status, 201);
    until(
        Duration::from_secs(30),
        "the run re-assembled with b",
        || (complete(&runs(addr)) == 1).then_some(()),
    );

    // Reads: strict ids, no path traversal.
    for bad in [
        "/v1/runs/20261126T050001Z",
        "/v1/runs/..%2F..%2Ftoken",
        "/v1/runs/2026",
        "/v1/runs/20261126T050000Z/heatmap.svg?view=pie",
    ] {
        let a = get(addr, bad);
        assert!(a.status == 404 || a.status == 400, "{bad}: {}", a.status);
    }
    // A parameter that is not UTF-8 is refused with a reason, as JSON.
    for bad in [
        "/v1/runs/%FF",
        "/runs/%FF",
        "/paths/%FF/b",
        "/v1/runs/%FF/heatmap.svg",
    ] {
        let a = get(addr, bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        let e = a.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains("UTF-8"), "{bad}: {}", a.body);
    }
    let delta = get(addr, "/v1/runs/20261126T050000Z/heatmap.svg?view=delta");
    refused(&delta, 404, "first run");
    let metrics = get(addr, "/metrics").body;
    for (reason, n) in [
        ("unauthorized", 5),
        ("unsupported_media_type", 1),
        ("too_large", 2),
        // Two broken bodies and two that are not envelopes.
        ("malformed", 4),
        ("invalid", 5),
        ("conflict", 1),
    ] {
        let line = format!("latmap_reports_rejected_total{{reason=\"{reason}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("latmap_reports_received_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("latmap_reports_duplicate_total 1\n"),
        "{metrics}"
    );
    promtool_check(&metrics);
}

/// The server killed with SIGKILL while it stores and assembles: every stored run
/// still parses, a half-written file is never taken for a run, every acknowledged
/// report is kept, and the restarted server finishes the runs.
#[test]
fn a_server_killed_mid_write_restarts_cleanly() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let port = free_port();
    let (server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    let auth = ("Authorization", BEARER);
    let fleet = ["a", "b", "c"];
    // Big reports (three paths of 20,000 samples each) make writes and analysis last.
    let mut acked = Vec::new();
    for minute in 0..4 {
        let epoch = format!("2026-11-26T05:{minute:02}:00Z");
        for region in fleet {
            let body = push_body(&epoch, report(region, &fleet, 20_000));
            let a = post(addr, &[auth, JSON], &body);
            assert_eq!(a.status, 201, "{}", a.body);
            acked.push((minute, region));
        }
    }
    // Kill right after the last acknowledgement, while the last run is being assembled.
    server.signal(Signal::SIGKILL);
    drop(server);
    let runs_at_kill = (0..4)
        .filter(|m| {
            dir.join(&format!("data/runs/20261126T05{m:02}00Z/run.json"))
                .exists()
        })
        .count();
    eprintln!("runs on disk when the server was killed: {runs_at_kill} of 4");
    // A write that a crash interrupted: a temporary file never renamed into place.
    let torn = dir.join("data/runs/20261126T050300Z/.run.json.tmp-4242");
    std::fs::create_dir_all(torn.parent().expect("folder")).expect("mkdir");
    std::fs::write(
        &torn,
        "{\n  \"schema\": \"latmap.run/1\",\n  \"id\": \"2026",
    )
    .expect("write");
    let restarted = Instant::now();
    let (_server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    let all = until(
        Duration::from_secs(60),
        "four complete runs after the restart",
        || {
            let r = runs(addr);
            (complete(&r) == 4).then_some(r)
        },
    );
    eprintln!(
        "restart after SIGKILL: all runs complete {:.2} s after the new server started",
        restarted.elapsed().as_secs_f64()
    );
    assert!(!torn.exists(), "the temporary file is cleaned up");
    for r in &all {
        let id = r["id"].as_str().expect("id");
        let text = std::fs::read_to_string(dir.join(&format!("data/runs/{id}/run.json")))
            .expect("run.json");
        let run: Value = serde_json::from_str(&text).expect("every stored run parses");
        assert_eq!(run["paths"].as_array().map(Vec::len), Some(6), "{id}");
    }
    for (minute, region) in acked {
        let p = dir.join(&format!(
            "data/reports/20261126T05{minute:02}00Z/{region}.json"
        ));
        assert!(p.exists(), "acknowledged report {} kept", p.display());
    }
}

/// Checks the exposition with Prometheus' own linter when it is installed.
pub(crate) fn promtool_check(metrics: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipping promtool check: promtool is not installed (Debian package prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_server_keeps_only_the_runs_its_retention_allows() {
    let dir = Dir::new();
    lab(&dir);
    // Keep two runs, and nothing older than a year: the epochs below are recent.
    let (_server, addr) = serve(&dir, free_port(), &["--keep", "2", "--keep-for", "365d"]);
    let auth = ("Authorization", BEARER);
    let now = Utc::now().timestamp();
    let epochs: Vec<String> = (1..=4)
        .map(|k| {
            DateTime::<Utc>::from_timestamp(now - now % 60 - 60 * (5 - k), 0)
                .unwrap()
                .to_rfc3339()
        })
        .collect();
    for epoch in &epochs {
        // A one-region fleet: every push completes its run at once.
        let a = post(
            addr,
            &[auth, JSON],
            &push_body(epoch, report("a", &["a"], 5)),
        );
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let newest: Vec<DateTime<Utc>> = epochs[2..].iter().map(|e| e.parse().unwrap()).collect();
    // Wait until the last push is assembled and the retention has run after it.
    let kept = until(
        Duration::from_secs(30),
        "the two newest runs are left",
        || {
            let kept: Vec<DateTime<Utc>> = runs(addr)
                .iter()
                .map(|r| r["epoch"].as_str().unwrap().parse().unwrap())
                .collect();
            (kept.len() == 2 && kept.contains(&newest[1])).then_some(kept)
        },
    );
    assert_eq!(kept, newest);
    // The files went too: two run folders, two report folders.
    for sub in ["runs", "reports"] {
        let n = std::fs::read_dir(dir.join(&format!("data/{sub}")))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(n, 2, "data/{sub}");
    }
    // A report older than --keep-for is refused, not stored and deleted again.
    let old = push_body("2020-01-01T00:00:00Z", report("a", &["a"], 5));
    let a = post(addr, &[auth, JSON], &old);
    assert_eq!(a.status, 410, "{}", a.body);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("older than this server keeps"),
        "{}",
        a.body
    );
}

/// The value of the sample line `series` (name and labels exactly) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let v = l.strip_prefix(series)?.strip_prefix(' ')?;
        v.trim().parse().ok()
    })
}

/// The refusals a push can only meet under load, and the retention's: each is
/// answered with its status and counted under its reason, and every reason is
/// exported from the start.
#[test]
fn refusals_under_load_and_by_retention_are_counted_under_their_reason() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    lab(&dir);
    // The budget of bodies in flight is one largest body: a push that declared it and
    // sends nothing takes it all until its body timeout.
    let (_server, addr) = serve(
        &dir,
        free_port(),
        &[
            "--max-body",
            "65536",
            "--max-in-flight",
            "65536",
            "--body-timeout",
            "4s",
            "--keep-for",
            "365d",
        ],
    );
    let before = get(addr, "/metrics").body;
    for reason in [
        "unauthorized",
        "too_large",
        "unsupported_media_type",
        "malformed",
        "invalid",
        "conflict",
        "expired",
        "busy",
        "timeout",
    ] {
        let series = format!("latmap_reports_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&before, &series), Some(0.0), "{series} in\n{before}");
    }
    let auth = ("Authorization", BEARER);
    let mut slow = std::net::TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        slow,
        "POST /v1/reports HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\nContent-Type: application/json\r\nContent-Length: 65536\r\nConnection: close\r\n\r\n{{",
        auth.0, auth.1
    )
    .expect("write");
    // Well inside the slow push's body timeout (4 s), it holds the whole budget.
    std::thread::sleep(Duration::from_millis(1000));
    let now = Utc::now().timestamp();
    let recent = DateTime::<Utc>::from_timestamp(now - now % 60, 0)
        .expect("time")
        .to_rfc3339();
    let a = post(
        addr,
        &[auth, JSON],
        &push_body(&recent, report("a", &["a", "b"], 5)),
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.header("retry-after").is_some(), "{}", a.head);
    assert_eq!(a.json()["reason"], "busy");
    let mut raw = String::new();
    slow.read_to_string(&mut raw)
        .expect("the slow push's answer");
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("\"reason\":\"timeout\""), "{raw}");
    // The budget is free again; a sweep older than the retention is refused.
    let a = post(
        addr,
        &[auth, JSON],
        &push_body("2020-01-01T00:00:00Z", report("a", &["a"], 5)),
    );
    assert_eq!(a.status, 410, "{}", a.body);
    assert_eq!(a.json()["reason"], "expired");
    let metrics = get(addr, "/metrics").body;
    for (reason, n) in [("busy", 1.0), ("timeout", 1.0), ("expired", 1.0)] {
        let series = format!("latmap_reports_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&metrics, &series), Some(n), "{series} in\n{metrics}");
    }
    promtool_check(&metrics);
}

/// `latmap_path_rtt_seconds`: per (source, target, kind) the buckets of the latest
/// run's samples of the path the graph takes (the address with most replies), so
/// that `histogram_quantile` finds the run's quantiles in the right bucket; a new run
/// replaces them, and a restarted server shows them again.
#[test]
fn rtt_histograms_hold_the_latest_runs_samples() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let port = free_port();
    let (server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    let auth = ("Authorization", BEARER);
    // a → b over two addresses: the second has more replies and is the path's.
    let spread: Vec<Option<u64>> = [
        30, 50, 51, 99, 100, 180, 420, 900, 1_500, 4_000, 12_000, 48_000, 200_000, 2_500_000,
    ]
    .into_iter()
    .map(Some)
    .chain([None, None])
    .collect();
    let push = |epoch: &str, ab: &[Option<u64>], ba: &[Option<u64>]| {
        let mut a = report("a", &["a", "b"], 0);
        a.paths = vec![
            PathEntry::from_samples(
                "a",
                "b",
                ProbeKind::Udp,
                "127.0.0.1:9",
                vec![Some(7), None, None],
            ),
            PathEntry::from_samples("a", "b", ProbeKind::Udp, "127.0.0.2:9", ab.to_vec()),
        ];
        let mut b = report("b", &["a", "b"], 0);
        b.paths = vec![PathEntry::from_samples(
            "b",
            "a",
            ProbeKind::Udp,
            "127.0.0.1:9",
            ba.to_vec(),
        )];
        for r in [a, b] {
            let x = post(addr, &[auth, JSON], &push_body(epoch, r));
            assert_eq!(x.status, 201, "{}", x.body);
        }
    };
    let ba: Vec<Option<u64>> = (0..50).map(|i| Some(20_000 + i * 10)).collect();
    push("2026-11-26T05:00:00Z", &spread, &ba);
    let metrics = until(Duration::from_secs(30), "the run's histograms", || {
        let m = get(addr, "/metrics").body;
        m.contains("latmap_path_rtt_seconds_count").then_some(m)
    });
    let check = |metrics: &str, source: &str, target: &str, samples: &[Option<u64>]| {
        let labels = format!("source=\"{source}\",target=\"{target}\",kind=\"udp\"");
        let replies: Vec<u64> = samples.iter().flatten().copied().collect();
        let mut buckets = Vec::new();
        for k in 0..20 {
            let bound_us = 50u64 << k;
            let le = latmap::remote::metrics::rtt_buckets_seconds()[k];
            let series = metrics
                .lines()
                .find(|l| {
                    l.starts_with(&format!("latmap_path_rtt_seconds_bucket{{{labels},le=\""))
                        && l.split("le=\"")
                            .nth(1)
                            .and_then(|v| v.split('"').next())
                            .and_then(|v| v.parse::<f64>().ok())
                            == Some(le)
                })
                .unwrap_or_else(|| panic!("no bucket le={le} for {labels} in\n{metrics}"));
            let n: u64 = series.rsplit(' ').next().unwrap().parse().unwrap();
            let want = replies.iter().filter(|&&us| us <= bound_us).count() as u64;
            assert_eq!(n, want, "{series}");
            buckets.push((le, n));
        }
        let inf = sample(
            metrics,
            &format!("latmap_path_rtt_seconds_bucket{{{labels},le=\"+Inf\"}}"),
        );
        assert_eq!(inf, Some(replies.len() as f64));
        let count = sample(
            metrics,
            &format!("latmap_path_rtt_seconds_count{{{labels}}}"),
        );
        assert_eq!(count, Some(replies.len() as f64));
        let sum =
            sample(metrics, &format!("latmap_path_rtt_seconds_sum{{{labels}}}")).expect("sum");
        let want = replies.iter().sum::<u64>() as f64 / 1e6;
        assert!((sum - want).abs() < 1e-9, "{sum} {want}");
        // histogram_quantile's rule: the bucket where the cumulative count reaches
        // q × count, interpolated linearly inside it. The run's own quantile (nearest
        // rank) lies in that bucket.
        let mut sorted = replies.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let rank = q * replies.len() as f64;
            let k = buckets
                .iter()
                .position(|&(_, n)| n as f64 >= rank)
                .expect("a bucket");
            let lower = if k == 0 { 0.0 } else { buckets[k - 1].0 };
            let upper = buckets[k].0;
            let below = if k == 0 { 0 } else { buckets[k - 1].1 };
            let estimate =
                lower + (upper - lower) * (rank - below as f64) / (buckets[k].1 - below) as f64;
            let exact =
                sorted[((rank.ceil() as usize).max(1) - 1).min(sorted.len() - 1)] as f64 / 1e6;
            assert!(
                lower < exact && exact <= upper && lower <= estimate && estimate <= upper,
                "q{q} of {labels}: {exact} s, estimated {estimate} s in ({lower}, {upper}]"
            );
        }
    };
    check(&metrics, "a", "b", &spread);
    check(&metrics, "b", "a", &ba);
    // One series per (source, target, kind): the other address of a → b is not shown.
    let ab_count = metrics
        .lines()
        .filter(|l| l.starts_with("latmap_path_rtt_seconds_count{source=\"a\",target=\"b\""))
        .count();
    assert_eq!(ab_count, 1, "{metrics}");
    promtool_check(&metrics);

    // A newer run replaces the histograms: its samples only, nothing added up.
    let ab2: Vec<Option<u64>> = (0..30).map(|i| Some(900 + i)).collect();
    push("2026-11-26T05:01:00Z", &ab2, &ba);
    let metrics = until(
        Duration::from_secs(30),
        "the newer run's histograms",
        || {
            let m = get(addr, "/metrics").body;
            let t = "2026-11-26T05:01:00Z"
                .parse::<DateTime<Utc>>()
                .expect("time")
                .timestamp();
            m.contains(&format!("latmap_latest_run_timestamp_seconds {t}\n"))
                .then_some(m)
        },
    );
    check(&metrics, "a", "b", &ab2);
    check(&metrics, "b", "a", &ba);

    // After a restart the latest run's histograms are read back from its reports.
    server.signal(Signal::SIGTERM);
    let mut server = server;
    assert!(
        server.wait(Duration::from_secs(30)).success(),
        "{}",
        server.log()
    );
    let (_server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    let metrics = until(
        Duration::from_secs(30),
        "the histograms after a restart",
        || {
            let m = get(addr, "/metrics").body;
            m.contains("latmap_path_rtt_seconds_count").then_some(m)
        },
    );
    check(&metrics, "a", "b", &ab2);
    check(&metrics, "b", "a", &ba);
    promtool_check(&metrics);
}
