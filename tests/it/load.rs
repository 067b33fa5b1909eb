//! The aggregator under hostile load: slow and many connections, pushes past the
//! memory budget, bursts of reports, full disks, many stored runs and kill -9. The
//! figures (latencies, CPU, memory) are measured by `cargo bench --bench serve`; these
//! tests check the behaviour.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;

use crate::harness::{Dir, timing_lock};
use crate::remote::{BEARER, JSON, TOKEN, agent, lab, post, push_body, report, runs, serve};
use crate::service::{Answer, free_port, get, http, until};

const AUTH: (&str, &str) = ("Authorization", BEARER);

fn recent(back: i64) -> String {
    let now = Utc::now().timestamp();
    DateTime::<Utc>::from_timestamp(now - now % 60 - 60 * back, 0)
        .expect("time")
        .to_rfc3339()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:02}")).collect()
}

fn body(epoch: &str, region: &str, fleet: &[String]) -> Vec<u8> {
    let fleet: Vec<&str> = fleet.iter().map(String::as_str).collect();
    push_body(epoch, report(region, &fleet, 10))
}

fn push_head(len: usize) -> String {
    format!(
        "POST /v1/reports HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Pushes the bodies at once, one thread each; the status of each.
fn push_all(addr: SocketAddr, bodies: Vec<Vec<u8>>) -> Vec<u16> {
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|b| std::thread::spawn(move || post(addr, &[AUTH, JSON], &b).status))
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect()
}

/// How a slow client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// The server closed it (or answered and closed), after this long.
    Closed(Duration),
    /// Still open when the test stopped looking.
    Open,
}

/// A client that opens a connection, sends `first`, then one byte of `drip` every
/// second until the server closes it or `give_up` passes.
fn slow_client(addr: SocketAddr, first: Vec<u8>, drip: &'static [u8], give_up: Duration) -> End {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return End::Closed(Duration::ZERO);
    };
    let opened = Instant::now();
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = s.write_all(&first);
    let mut buf = [0u8; 1024];
    while opened.elapsed() < give_up {
        match s.read(&mut buf) {
            Ok(_) => return End::Closed(opened.elapsed()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return End::Closed(opened.elapsed()),
        }
        if s.write_all(drip).is_err() {
            return End::Closed(opened.elapsed());
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    End::Open
}

#[test]
fn slow_clients_are_closed_and_cannot_starve_others() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let (mut server, addr) = serve(
        &dir,
        0,
        &[
            "--header-timeout",
            "2s",
            "--idle-timeout",
            "3s",
            "--body-timeout",
            "4s",
            "--shutdown-timeout",
            "2s",
        ],
    );
    let ends = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let kinds: [(&str, usize, Vec<u8>, &'static [u8]); 3] = [
        ("idle", 200, Vec::new(), b""),
        (
            "header",
            150,
            b"POST /v1/reports HTTP/1.1\r\nHost: t\r\n".to_vec(),
            b"X",
        ),
        ("body", 150, push_head(100_000).into_bytes(), b"{"),
    ];
    for (kind, n, first, drip) in kinds {
        for _ in 0..n {
            let ends = ends.clone();
            let first = first.clone();
            threads.push(
                std::thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn(move || {
                        let end = slow_client(addr, first, drip, Duration::from_secs(30));
                        ends.lock().unwrap().push((kind, end));
                    })
                    .expect("thread"),
            );
        }
    }
    // While the 500 are held, others are answered.
    std::thread::sleep(Duration::from_millis(500));
    let fleet = names(2);
    for k in 0..5 {
        let t = Instant::now();
        assert_eq!(get(addr, "/healthz").status, 200);
        let e = recent(k + 1);
        assert_eq!(
            post(addr, &[AUTH, JSON], &body(&e, "r00", &fleet)).status,
            201
        );
        eprintln!(
            "with 500 slow clients: a health check and a push took {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for t in threads {
        t.join().expect("slow client");
    }
    let ends = ends.lock().unwrap().clone();
    for (kind, limit) in [("idle", 2.0), ("header", 2.0), ("body", 4.0)] {
        let mut closed: Vec<f64> = ends
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, e)| match e {
                End::Closed(d) => d.as_secs_f64(),
                End::Open => f64::INFINITY,
            })
            .collect();
        closed.sort_by(f64::total_cmp);
        let last = closed.last().copied().unwrap_or(0.0);
        eprintln!(
            "{kind}: {} connections closed by the server, the last after {last:.1} s (timeout {limit} s)",
            closed.len()
        );
        // Closed after their timeout, not before, and not much later on a busy machine.
        assert!(
            closed[0] >= limit - 0.5,
            "{kind}: closed after {} s",
            closed[0]
        );
        assert!(last < limit + 10.0, "{kind}: still open after {last} s");
    }
    // SIGTERM with slow clients connected: the shutdown takes --shutdown-timeout.
    let held: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(push_head(100_000).as_bytes()).expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    assert!(
        server.wait(Duration::from_secs(15)).success(),
        "{}",
        server.log()
    );
    eprintln!(
        "SIGTERM with {} slow clients connected: stopped in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{}", server.log());
}

#[test]
fn past_the_connection_limit_clients_get_503_with_retry_after() {
    let dir = Dir::new();
    lab(&dir);
    let (_server, addr) = serve(&dir, 0, &["--max-connections", "20"]);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // The server accepts the twenty in its own time (a loaded machine may take a while):
    // wait until it has, which it shows by refusing the next one. A server that never
    // refuses fails here.
    let a = crate::service::until(Duration::from_secs(20), "a 503 past 20 connections", || {
        let a = get(addr, "/healthz");
        (a.status == 503).then_some(a)
    });
    assert_eq!(a.header("retry-after"), Some("2"));
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("too many connections")
    );
    drop(held);
    until(Duration::from_secs(10), "room again", || {
        (get(addr, "/healthz").status == 200).then_some(())
    });
}

#[test]
fn pushes_past_the_memory_budget_get_503_with_retry_after() {
    let dir = Dir::new();
    lab(&dir);
    let (_server, addr) = serve(&dir, 0, &["--max-in-flight", "200000"]);
    // A push whose body is on its way takes 199,900 bytes of the 200,000.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(push_head(199_900).as_bytes())
        .expect("write");
    slow.write_all(b"{").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let b = body(&recent(1), "r00", &names(2));
    let a = post(addr, &[AUTH, JSON], &b);
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.header("retry-after"), Some("2"));
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("memory budget")
    );
    drop(slow);
    until(Duration::from_secs(10), "the push accepted", || {
        (post(addr, &[AUTH, JSON], &b).status == 201).then_some(())
    });
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[test]
fn a_sweep_is_assembled_once_and_late_reports_in_one_rebuild() {
    let dir = Dir::new();
    lab(&dir);
    let (server, addr) = serve(&dir, 0, &["--deadline", "3s", "--batch", "10s"]);
    let fleet = names(40);
    let e1 = recent(2);
    let id1 = latmap::schedule::run_dir_name(e1.parse().expect("epoch"));
    // 35 of 40 at once: the run is built once, at the deadline.
    let statuses = push_all(
        addr,
        fleet[..35].iter().map(|r| body(&e1, r, &fleet)).collect(),
    );
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    until(Duration::from_secs(30), "the run at its deadline", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id1.as_str())
            .then_some(())
    });
    // The 5 late ones at once: one rebuild for all of them.
    let statuses = push_all(
        addr,
        fleet[35..].iter().map(|r| body(&e1, r, &fleet)).collect(),
    );
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    until(Duration::from_secs(60), "the run complete", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id1.as_str() && r["complete"] == true)
            .then_some(())
    });
    // A whole sweep at once: built once, when its last report is in.
    let e2 = recent(1);
    let id2 = latmap::schedule::run_dir_name(e2.parse().expect("epoch"));
    let statuses = push_all(addr, fleet.iter().map(|r| body(&e2, r, &fleet)).collect());
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    until(Duration::from_secs(30), "the second run complete", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id2.as_str() && r["complete"] == true)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let log = server.log();
    assert_eq!(count(&log, &format!("run {id1} assembled")), 1, "{log}");
    assert_eq!(count(&log, &format!("run {id1} re-assembled")), 1, "{log}");
    assert_eq!(count(&log, &format!("run {id2} assembled")), 1, "{log}");
    assert_eq!(count(&log, &format!("run {id2} re-assembled")), 0, "{log}");
    let metrics = get(addr, "/metrics").body;
    assert!(
        metrics.contains("latmap_runs_assembled_total 3\n"),
        "{metrics}"
    );
    // The run holds every path, in the run's order, and reads back with every check.
    let run = latmap::run::Run::read(&dir.join(&format!("data/runs/{id2}/run.json")))
        .expect("the run reads back");
    assert_eq!(run.paths.len(), 40 * 39);
    let again = dir.join("again.json");
    run.write(&again).expect("write");
    assert_eq!(
        std::fs::read(&again).expect("read"),
        std::fs::read(dir.join(&format!("data/runs/{id2}/run.json"))).expect("read"),
        "the streamed run is byte for byte what Run::write writes"
    );
}

/// A tmpfs of `size` mounted on `dir` for the test; unmounted when dropped. `None`
/// (with the reason printed) when this is not possible here.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: mounting a small file system to fill needs root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: cannot mount a tmpfs on {}", dir.display());
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    path
}

#[test]
fn a_full_disk_refuses_pushes_and_assembly_is_retried_until_it_fits() {
    let dir = Dir::new();
    lab(&dir);
    let Some(_mount) = Mount::tmpfs(&dir.join("data"), "8m") else {
        return;
    };
    let (server, addr) = serve(&dir, 0, &["--deadline", "3s"]);
    let fleet = names(20);
    let e = recent(1);
    let id = latmap::schedule::run_dir_name(e.parse().expect("epoch"));
    let mut acked = Vec::new();
    for r in &fleet[..19] {
        assert_eq!(post(addr, &[AUTH, JSON], &body(&e, r, &fleet)).status, 201);
        acked.push(r.clone());
    }
    let filler = fill(&dir.join("data"));
    // A push to a full disk: 5xx, so the agent keeps it and sends it again.
    let last = body(&e, &fleet[19], &fleet);
    let a = post(addr, &[AUTH, JSON], &last);
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("send it again later")
    );
    // The deadline's build fails, is logged with its cause and retried.
    until(Duration::from_secs(30), "a failed build logged", || {
        let log = server.log();
        (log.contains(&format!("cannot assemble run {id} (attempt"))
            && log.contains("No space left on device")
            && log.contains("trying again"))
        .then_some(())
    });
    std::fs::remove_file(&filler).expect("free the disk");
    // Without a restart: the run appears, then the resent report completes it.
    until(Duration::from_secs(60), "the run after the retry", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id.as_str())
            .then_some(())
    });
    assert_eq!(post(addr, &[AUTH, JSON], &last).status, 201);
    acked.push(fleet[19].clone());
    until(Duration::from_secs(60), "the run complete", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id.as_str() && r["complete"] == true)
            .then_some(())
    });
    let metrics = get(addr, "/metrics").body;
    assert!(
        !metrics.contains("latmap_assembly_failures_total 0\n"),
        "{metrics}"
    );
    for r in acked {
        assert!(dir.join(&format!("data/reports/{id}/{r}.json")).exists());
    }
    drop(server);
}

/// The spool of `region` on a small file system filled to the last block (its
/// `rejected/` folder made first); `None` (the test skips) without root.
fn full_spool(dir: &Dir, region: &str) -> Option<(Mount, PathBuf)> {
    let spool = dir.join(&format!("spool/{region}"));
    let mount = Mount::tmpfs(&spool, "256k")?;
    std::fs::create_dir_all(spool.join("rejected")).expect("mkdir");
    let filler = fill(&spool);
    Some((mount, filler))
}

/// How many runs listed by the server hold a report of `region`.
fn reported_in(addr: SocketAddr, region: &str) -> usize {
    runs(addr)
        .into_iter()
        .filter(|r| {
            r["reported"]
                .as_array()
                .is_some_and(|x| x.contains(&region.into()))
        })
        .count()
}

#[test]
fn an_agent_with_a_full_spool_disk_keeps_its_reports_and_delivers_them_later() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let Some((_mount, filler)) = full_spool(&dir, "a") else {
        return;
    };
    let (_server, addr) = serve(&dir, 0, &["--deadline", "1s"]);
    let mut a = agent(&dir, "a", addr, "2");
    until(Duration::from_secs(60), "the spool failure logged", || {
        a.log().contains("cannot write to the spool").then_some(())
    });
    assert!(
        a.child.try_wait().expect("wait").is_none(),
        "the agent exited:\n{}",
        a.log()
    );
    std::fs::remove_file(&filler).expect("free the disk");
    let status = a.wait(Duration::from_secs(90));
    assert!(status.success(), "{}", a.log());
    let log = a.log();
    assert_eq!(
        log.matches("cannot write to the spool").count(),
        1,
        "logged once a minute:\n{log}"
    );
    until(
        Duration::from_secs(30),
        "both sweeps delivered and assembled",
        || (reported_in(addr, "a") == 2).then_some(()),
    );
}

/// The spool disk stays full: the agent sends what it holds in memory as soon as the
/// aggregator answers, so nothing waits for the disk; a stop with reports still in
/// memory (the aggregator down as well) says how many are lost.
#[test]
fn an_agent_with_a_full_spool_disk_delivers_from_memory_and_says_what_a_stop_loses() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let Some((_mount, _filler)) = full_spool(&dir, "a") else {
        return;
    };
    let (server, addr) = serve(&dir, 0, &["--deadline", "1s"]);
    let mut a = agent(&dir, "a", addr, "2");
    let status = a.wait(Duration::from_secs(90));
    let log = a.log();
    assert!(status.success(), "{log}");
    assert!(log.contains("cannot write to the spool"), "{log}");
    assert_eq!(
        log.matches("from memory (the spool disk refused it)")
            .count(),
        2,
        "{log}"
    );
    until(Duration::from_secs(30), "both sweeps assembled", || {
        (reported_in(addr, "a") == 2).then_some(())
    });
    // Now nobody answers either: a stop loses what memory holds, and says so.
    drop(server);
    let mut a = crate::service::Proc::start(
        dir.path(),
        "agent-a-stopped.log",
        &[
            "--config",
            "lab.toml",
            "agent",
            "--region",
            "a",
            "--aggregator",
            &format!("http://{addr}"),
            "--token-file",
            "token",
            "--every",
            "2s",
            "--spool",
            "spool/a",
        ],
    );
    until(Duration::from_secs(60), "a report held in memory", || {
        a.log().contains("held in memory").then_some(())
    });
    a.signal(Signal::SIGTERM);
    a.wait(Duration::from_secs(30));
    let log = a.log();
    assert!(
        log.contains(
            "report(s) held in memory, because the spool disk refused them, are lost with this stop"
        ),
        "{log}"
    );
}

#[test]
fn startup_does_not_read_the_stored_runs() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    // 10,000 stored runs: a small valid run each, with its listing.
    let (server, addr) = serve(&dir, 0, &[]);
    let e = recent(1);
    assert_eq!(
        post(addr, &[AUTH, JSON], &push_body(&e, report("a", &["a"], 3))).status,
        201
    );
    let id = latmap::schedule::run_dir_name(e.parse().expect("epoch"));
    until(Duration::from_secs(30), "the first run", || {
        (runs(addr).len() == 1).then_some(())
    });
    drop(server);
    let run = std::fs::read(dir.join(&format!("data/runs/{id}/run.json"))).expect("run");
    let listing = std::fs::read_to_string(dir.join(&format!("data/runs/{id}/listing.json")))
        .expect("listing");
    let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("t")
        .timestamp();
    for k in 0..10_000i64 {
        let t = DateTime::<Utc>::from_timestamp(t0 + 60 * k, 0).expect("t");
        let other = latmap::schedule::run_dir_name(t);
        let folder = dir.join(&format!("data/runs/{other}"));
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("run.json"), &run).expect("run");
        let l = listing.replace(&id, &other).replace(
            &e.replace("+00:00", "Z"),
            &t.to_rfc3339().replace("+00:00", "Z"),
        );
        std::fs::write(folder.join("listing.json"), l).expect("listing");
    }
    let started = Instant::now();
    let (_server, addr) = serve(&dir, 0, &[]);
    let listening = started.elapsed();
    eprintln!(
        "with 10,001 stored runs the server answered /healthz {:.2} s after it started",
        listening.as_secs_f64()
    );
    // Reading 10,001 runs took seconds before (1.9 s for 1,576); listing their
    // folders takes milliseconds. The bound is loose for a busy machine.
    assert!(listening < Duration::from_secs(5), "{listening:?}");
    let all = runs(addr);
    assert_eq!(all.len(), 10_001);
    assert_eq!(get(addr, "/v1/runs/latest").json()["id"], id.as_str());
}

#[test]
fn nothing_acknowledged_is_lost_when_the_server_is_killed_during_a_burst() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir);
    let port = free_port();
    let (server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    let fleet = names(30);
    let epochs: Vec<String> = (1..=3).map(recent).collect();
    let mut bodies: Vec<(String, String, Vec<u8>)> = Vec::new();
    for e in &epochs {
        for r in &fleet {
            bodies.push((e.clone(), r.clone(), body(e, r, &fleet)));
        }
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = bodies
        .clone()
        .into_iter()
        .map(|(e, r, b)| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                if let Ok(a) = http(addr, "POST", "/v1/reports", &[AUTH, JSON], Some(&b))
                    && (a.status == 201 || a.status == 200)
                {
                    acked.lock().unwrap().push((e, r));
                }
            })
        })
        .collect();
    until(Duration::from_secs(30), "a third acknowledged", || {
        (acked.lock().unwrap().len() >= 30).then_some(())
    });
    server.signal(Signal::SIGKILL);
    drop(server);
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("killed with {} of 90 pushes acknowledged", acked.len());
    for (e, r) in &acked {
        let id = latmap::schedule::run_dir_name(e.parse().expect("epoch"));
        let file = dir.join(&format!("data/reports/{id}/{r}.json"));
        latmap::report::RegionReport::read(&file, None)
            .unwrap_or_else(|err| panic!("acknowledged report {}: {err}", file.display()));
    }
    // The agents send again what was not acknowledged; every run completes.
    let (_server, addr) = serve(&dir, port, &["--deadline", "60s"]);
    for (_, _, b) in &bodies {
        let a: Answer = post(addr, &[AUTH, JSON], b);
        assert!(a.status == 201 || a.status == 200, "{}", a.body);
    }
    let all = until(Duration::from_secs(60), "three complete runs", || {
        let r = runs(addr);
        (r.iter().filter(|r| r["complete"] == true).count() == 3).then_some(r)
    });
    assert_eq!(all.len(), 3);
}

#[test]
fn unauthorised_requests_are_logged_without_the_token_and_files_are_private() {
    let dir = Dir::new();
    lab(&dir);
    let (server, addr) = serve(&dir, 0, &[]);
    let guess = "Bearer guessed-token-XYZ-0000";
    let a = post(addr, &[("Authorization", guess), JSON], b"{}");
    assert_eq!(a.status, 401);
    let e = recent(1);
    assert_eq!(
        post(addr, &[AUTH, JSON], &body(&e, "r00", &names(2))).status,
        201
    );
    let log = until(Duration::from_secs(10), "the 401 logged", || {
        let log = server.log();
        log.contains("refused an unauthorised request from 127.0.0.1:")
            .then_some(log)
    });
    assert!(log.contains("wrong token"), "{log}");
    assert!(
        !log.contains("guessed-token") && !log.contains(TOKEN),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour in a log file:\n{log}");
    use std::os::unix::fs::PermissionsExt;
    let id = latmap::schedule::run_dir_name(e.parse().expect("epoch"));
    let mode = |p: &str| {
        std::fs::metadata(dir.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    let f = format!("data/reports/{id}/r00.json");
    assert_eq!(mode(&f) & 0o137, 0, "{f}: {:o}", mode(&f));
    for d in ["data", "data/reports", &format!("data/reports/{id}")] {
        assert_eq!(mode(d) & 0o027, 0, "{d}: {:o}", mode(d));
    }
}

#[test]
fn short_tokens_are_refused() {
    let dir = Dir::new();
    lab(&dir);
    dir.write("short", "x\n");
    let r = dir.latmap(&["serve", "--token-file", "short", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.status, Some(2));
    assert!(
        r.stderr.contains("is 1 bytes long; use at least 16"),
        "{}",
        r.stderr
    );
}

/// A skew so large that the server's newest epoch would leave the calendar is refused
/// at start with what to do (it used to make every push panic).
#[test]
fn a_skew_past_its_cap_is_refused_at_start() {
    let dir = Dir::new();
    lab(&dir);
    dir.write("token", "0123456789abcdef0123\n");
    for skew in ["270000years", "2days", "300000000years"] {
        let r = dir.latmap(&[
            "serve",
            "--token-file",
            "token",
            "--listen",
            "127.0.0.1:0",
            "--max-skew",
            skew,
        ]);
        assert_eq!(r.status, Some(2), "{skew}: {}", r.stderr);
        assert!(
            r.stderr.contains("--max-skew") && r.stderr.contains("fix the agents' clocks"),
            "{skew}: {}",
            r.stderr
        );
    }
}

/// Reports of several targets per pair of regions and of two kinds, their paths in no
/// particular order, whose replies decide which target stands for each pair (the most
/// replies; of equals, the first target): the run `serve` assembles, which holds only
/// those paths while it analyses, is byte for byte the run that merging the whole
/// reports and analysing them makes (what `latmap aggregate` does), findings
/// included, and `/metrics` shows the histogram of the path that stands for each pair.
#[test]
fn a_served_run_of_many_targets_per_pair_is_the_run_the_whole_reports_make() {
    use latmap::config::ProbeKind;
    use latmap::report::{PathEntry, synthetic_samples};
    let dir = Dir::new();
    lab(&dir);
    let (_server, addr) = serve(&dir, 0, &["--deadline", "60s"]);
    let fleet = names(6);
    let e = recent(1);
    let id = latmap::schedule::run_dir_name(e.parse().expect("epoch"));
    // A fixed sequence (xorshift) decides losses, delays and the paths' order.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let fleet_ref: Vec<&str> = fleet.iter().map(String::as_str).collect();
    let mut reports = Vec::new();
    for (i, region) in fleet.iter().enumerate() {
        let mut r = report(region, &fleet_ref, 1);
        r.paths.clear();
        for (j, target) in fleet.iter().enumerate() {
            if i == j {
                continue;
            }
            for kind in [ProbeKind::Udp, ProbeKind::Icmp] {
                for t in 0..3u64 {
                    let spec = match kind {
                        ProbeKind::Udp => format!("10.0.{j}.{t}:862"),
                        _ => format!("10.0.{j}.{t}"),
                    };
                    // Each target of a pair has its own delay, so the one that stands
                    // for the pair shows in the findings; r05 is slow from everywhere,
                    // and r00 -> r01 loses most probes.
                    let mut rtt = 10_000 + 4_000 * i.abs_diff(j) as u64 + 7_000 * t;
                    if j == 5 {
                        rtt += 300_000;
                    }
                    let lost = if (i, j) == (0, 1) {
                        6
                    } else {
                        next(3) as usize
                    };
                    let s = synthetic_samples(rtt, lost, 300 + next(500), 10);
                    r.paths
                        .push(PathEntry::from_samples(region, target, kind, &spec, s));
                }
            }
        }
        // No particular order in the file.
        for k in (1..r.paths.len()).rev() {
            let other = next(k as u64 + 1) as usize;
            r.paths.swap(k, other);
        }
        reports.push(crate::remote::at_epoch(&e, r));
    }
    let statuses = push_all(
        addr,
        reports.iter().map(|r| push_body(&e, r.clone())).collect(),
    );
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    until(Duration::from_secs(60), "the run complete", || {
        runs(addr)
            .iter()
            .any(|r| r["id"] == id.as_str() && r["complete"] == true && r["paths"] == 180)
            .then_some(())
    });
    let mut whole = latmap::run::Run::from_reports(&reports).expect("merge");
    whole.id = id.clone();
    whole.anomalies = latmap::anomaly::analyse(&whole, &Default::default());
    assert!(
        whole.anomalies.len() >= 3,
        "the reports should raise findings: {:?}",
        whole.anomalies
    );
    let expected = dir.join("whole.json");
    whole.write(&expected).expect("write");
    let served = std::fs::read_to_string(dir.join(&format!("data/runs/{id}/run.json")))
        .expect("the served run");
    assert_eq!(
        served,
        std::fs::read_to_string(&expected).expect("read"),
        "the served run is the run of the whole reports"
    );
    // /metrics: each pair's histogram is its standing path's.
    let metrics = get(addr, "/metrics").body;
    for (i, j) in [(0usize, 1usize), (2, 5), (4, 3)] {
        let stands = whole
            .paths
            .iter()
            .filter(|p| p.source == fleet[i] && p.target == fleet[j] && p.kind == ProbeKind::Udp)
            .fold(None::<&PathEntry>, |best, p| match best {
                Some(b) if !latmap::run::stands_for_pair(p, b) => Some(b),
                _ => Some(p),
            })
            .expect("a path");
        let labels = format!(
            "source=\"{}\",target=\"{}\",kind=\"udp\"",
            fleet[i], fleet[j]
        );
        let sum = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("latmap_path_rtt_seconds_sum{{{labels}}} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no sum for {labels} in\n{metrics}"));
        // The sum of the standing path's samples (the run file keeps them).
        let file =
            latmap::run::Run::read(&dir.join(&format!("data/runs/{id}/run.json"))).expect("read");
        let p = file
            .paths
            .iter()
            .find(|p| p.key() == stands.key())
            .expect("the path");
        let want = p.samples_us.iter().flatten().sum::<u64>() as f64 / 1e6;
        assert!((sum - want).abs() < 1e-9, "{labels}: {sum} against {want}");
    }
}

#[test]
fn heavy_reads_are_drawn_a_few_at_once_and_past_their_line_get_503() {
    let dir = Dir::new();
    lab(&dir);
    let (server, addr) = serve(&dir, 0, &["--max-drawings", "1"]);
    let fleet = names(60);
    let statuses = push_all(
        addr,
        fleet.iter().map(|r| body(&recent(1), r, &fleet)).collect(),
    );
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    until(Duration::from_secs(60), "the run complete", || {
        runs(addr)
            .iter()
            .any(|r| r["complete"] == true)
            .then_some(())
    });
    // One drawing alone, for its size and time.
    let t = Instant::now();
    let alone = get(addr, "/v1/runs/latest/heatmap.svg");
    let one = t.elapsed();
    assert_eq!(alone.status, 200, "{}", alone.body);
    assert!(alone.body.trim_end().ends_with("</svg>"));
    // Many at once: one is drawn, 8 wait their turn, the others are turned away at
    // once with a reason and Retry-After. Each drawing takes `one`, so the line is
    // still full while the requests, sent within a few milliseconds, arrive.
    let n = 30;
    let answers: Vec<(crate::service::Answer, Duration)> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let t = Instant::now();
                (get(addr, "/v1/runs/latest/heatmap.svg"), t.elapsed())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let drawn: Vec<_> = answers.iter().filter(|(a, _)| a.status == 200).collect();
    let refused: Vec<_> = answers.iter().filter(|(a, _)| a.status == 503).collect();
    assert_eq!(drawn.len() + refused.len(), n, "only 200 or 503");
    assert!(
        drawn.len() >= 9,
        "the one drawn and the 8 waiting: {}",
        drawn.len()
    );
    assert!(
        !refused.is_empty(),
        "a drawing takes {one:?}; none turned away"
    );
    for (a, _) in &drawn {
        assert_eq!(a.body, alone.body, "every drawing whole and the same");
    }
    for (a, took) in &refused {
        assert_eq!(a.header("retry-after"), Some("2"));
        let reason = a.json()["error"].as_str().unwrap_or("").to_string();
        assert!(reason.contains("--max-drawings"), "{reason}");
        // Turned away without waiting for a drawing.
        assert!(
            *took < one * 4 + Duration::from_secs(2),
            "{took:?} against {one:?}"
        );
    }
    // The server is still answering, and drawings go on once the line is gone.
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(get(addr, "/v1/runs/latest/heatmap.svg").status, 200);
    assert!(server.log().contains("answered 503 to a read"));
}
