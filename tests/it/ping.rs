//! `latmap ping`: fping's habits on latmap's engine, its exit codes, its errors, how
//! it times replies, and how it reports a prober that could not keep its schedule.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Dir, can_ping, timing_lock};

fn json(out: &crate::harness::Run) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", out.stdout, out.stderr))
}

fn samples(p: &Value) -> Vec<u64> {
    p["samples_us"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

#[test]
fn ping_prints_a_line_per_target_and_every_reply() {
    if !can_ping() {
        eprintln!("skipped: no ICMP socket allowed");
        return;
    }
    let _t = timing_lock();
    let dir = Dir::new();
    dir.write(
        "targets.txt",
        "# loopback\n127.0.0.1\n\n127.0.0.2\n127.0.0.1\n",
    );
    let out = dir.latmap(&["ping", "-f", "targets.txt", "::1", "-c", "4", "-p", "5ms"]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let replies = out.stdout.lines().filter(|l| l.contains(" : [")).count();
    assert_eq!(replies, 12, "every reply as it came:\n{}", out.stdout);
    let summary: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("xmt/rcv/%loss"))
        .collect();
    assert_eq!(
        summary.len(),
        3,
        "one line per target, duplicates once:\n{}",
        out.stdout
    );
    for line in &summary {
        assert!(line.contains("= 4/4/0%, min/p50/avg/max = "), "{line}");
    }
    // -q -C: the summary lines only, each with every probe's RTT.
    let out = dir.latmap(&["ping", "127.0.0.1", "-c", "3", "-p", "5ms", "-q", "-C"]);
    assert_eq!(out.status, Some(0));
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let rtts: Vec<&str> = out
        .stdout
        .rsplit(" : ")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(rtts.len(), 3, "{}", out.stdout);
}

#[test]
fn ping_json_gives_path_entries_timed_by_the_kernel() {
    if !can_ping() {
        eprintln!("skipped: no ICMP socket allowed");
        return;
    }
    let _t = timing_lock();
    let dir = Dir::new();
    let out = dir.latmap(&[
        "ping",
        "127.0.0.1",
        "::1",
        "-c",
        "50",
        "-p",
        "2ms",
        "--format",
        "json",
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let v = json(&out);
    assert_eq!(v["schema"], "latmap.ping/1");
    for p in v["paths"].as_array().unwrap() {
        assert_eq!(
            (
                p["kind"].as_str(),
                p["sent"].as_u64(),
                p["received"].as_u64()
            ),
            (Some("icmp"), Some(50), Some(50)),
            "{p}"
        );
        let s = samples(p);
        // Sent-time before the send call, receive time from the kernel: never 0 µs
        // (surge-ping's user-space timing read 0 µs for a third of loopback probes).
        assert!(s.iter().all(|&us| us >= 1), "a 0 µs reading: {s:?}");
        assert!(p["rtt_us"]["p50"].as_u64().unwrap() < 1_000, "{p}");
        assert_eq!(p["lagged"], 0);
    }
    let h = &v["prober"];
    assert_eq!(h["queue_drops"], 0, "{h}");
    assert!(
        h["receive_gap_p50_us"].is_u64() && h["send_lag_p99_us"].is_u64(),
        "{h}"
    );
}

#[test]
fn ping_exit_status_says_whether_every_target_answered() {
    let _t = timing_lock();
    let dir = Dir::new();
    // Nothing listens on this UDP port: every probe is lost.
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = quiet.local_addr().unwrap().port();
    let out = dir.latmap(&[
        "ping",
        "--kind",
        "udp",
        &format!("127.0.0.1:{port}"),
        "-c",
        "2",
        "-p",
        "10ms",
        "-t",
        "200ms",
    ]);
    assert_eq!(out.status, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("= 2/0/100%"), "{}", out.stdout);
    // A listening TCP port answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = listener.local_addr().unwrap().port();
    let out = dir.latmap(&[
        "ping",
        "--kind",
        "tcp",
        &format!("127.0.0.1:{tport}"),
        "-c",
        "3",
        "-p",
        "10ms",
        "--format",
        "json",
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let p = &json(&out)["paths"][0];
    assert_eq!(p["received"], 3, "{p}");
    // The kernel's own handshake RTT: well under a millisecond on loopback.
    assert!(p["rtt_us"]["max"].as_u64().unwrap() < 5_000, "{p}");
}

#[test]
fn ping_refuses_bad_arguments_with_the_fix() {
    let dir = Dir::new();
    for (args, says) in [
        (&["ping", "127.0.0.1", "-p", "20"][..], "has no unit"),
        (
            &["ping", "--kind", "tcp", "127.0.0.1"][..],
            "tcp probes need a port",
        ),
        (&["ping", "127.0.0.1:80"][..], "icmp probes have no port"),
        (&["ping"][..], "no targets"),
        (&["ping", "not_a host"][..], "is invalid"),
        (
            &["ping", "127.0.0.1", "-t", "2m"][..],
            "--timeout is out of range; use a duration above 0 and at most \"60s\"",
        ),
        (&["ping", "-f", "."][..], "not a regular file"),
    ] {
        let out = dir.latmap(args);
        assert_eq!(out.status, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    dir.write("bad.txt", "127.0.0.1\n\n  10.0.0.300\n");
    let out = dir.latmap(&["ping", "-f", "bad.txt"]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("bad.txt:3: target"), "{}", out.stderr);
}

#[test]
fn a_stalled_prober_shows_its_lag_and_keeps_its_numbers() {
    if !can_ping() {
        eprintln!("skipped: no ICMP socket allowed");
        return;
    }
    let _t = timing_lock();
    // Stop the whole prober for 80 ms in the middle of a run, as a host starved of CPU
    // would: the sends due meanwhile go out late, and the run says so; the replies in
    // flight wait in the socket, and their RTTs, taken from the kernel's receive time,
    // stay at loopback's.
    let child = Command::new(env!("CARGO_BIN_EXE_latmap"))
        .args([
            "ping",
            "127.0.0.1",
            "-c",
            "60",
            "-p",
            "5ms",
            "--format",
            "json",
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::sleep(Duration::from_millis(120));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &v["prober"];
    assert!(h["send_lag_max_us"].as_u64().unwrap() >= 40_000, "{h}");
    assert!(h["lagged_sends"].as_u64().unwrap() >= 1, "{h}");
    let p = &v["paths"][0];
    assert!(
        p["lagged"].as_u64().unwrap() >= 1,
        "the path is marked: {p}"
    );
    assert_eq!(p["received"], 60, "{p}");
    let s = samples(p);
    assert!(
        s.iter().all(|&us| us < 5_000),
        "the stall is not in the RTTs: {s:?}"
    );
    assert!(stderr.contains("short of CPU"), "{stderr}");
}

/// The median over targets of each target's median RTT, from `-C`-style lines
/// ("NAME : ... : r1 r2 r3" or "NAME : r1 r2 r3", in ms).
fn median_of_medians(text: &str) -> f64 {
    let mut medians: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" : "))
        .filter_map(|l| {
            let mut v: Vec<f64> = l
                .rsplit(" : ")
                .next()?
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    medians[medians.len() / 2]
}

#[test]
fn ping_agrees_with_fping() {
    if !can_ping() || Command::new("fping").arg("-v").output().is_err() {
        eprintln!(
            "skipped: needs fping (Debian's package; .ci/run installs it) and an ICMP socket"
        );
        return;
    }
    let _t = timing_lock();
    let dir = Dir::new();
    let targets: String = (1..=200)
        .map(|i| format!("127.9.{}.{}\n", i / 100, 1 + i % 100))
        .collect();
    dir.write("t.txt", &targets);
    let f = Command::new("fping")
        .args(["-q", "-C", "5", "-i", "1", "-p", "20", "-t", "500", "-f"])
        .arg(dir.join("t.txt"))
        .output()
        .unwrap();
    let fping = median_of_medians(&String::from_utf8_lossy(&f.stderr));
    let out = dir.latmap(&[
        "ping", "-q", "-C", "-c", "5", "-i", "1ms", "-p", "20ms", "-t", "500ms", "-f", "t.txt",
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let latmap = median_of_medians(&out.stdout);
    // Both read a few microseconds on loopback; a busy machine moves both alike.
    assert!(
        (latmap - fping).abs() * 1000.0 <= 20.0,
        "latmap {latmap:.3} ms, fping {fping:.3} ms"
    );
}
