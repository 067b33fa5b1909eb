//! The netns lab (`[lab] mode = "netns"`), end to end: regions in network namespaces
//! behind an emulating core, every probe kind against the emulated truth, fping in a
//! region, forged replies from another namespace, a lost SYN, the agents-and-aggregator
//! deployment, and hygiene (nothing left after a killed sweep, a failure half-way, or
//! without root). Needs root, iproute2 and iptables with the NFQUEUE target; skipped
//! with the reason otherwise.
//!
//! Every test keeps its lab records in its own folder (`LATMAP_LAB_DIR`), takes the
//! lab lock (their namespaces come and go; the comparisons of `ip netns list` must see
//! only their own) and the timing lock, and removes its lab even when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Dir, Run, binomial_99, latmap_env, read_json, repo, timing_lock};

/// One netns lab at a time.
static NETLAB: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn command_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the netns lab cannot run here, if it cannot: decided once, by adding an
/// NFQUEUE rule in a scratch namespace.
fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            if !is_root() {
                return Some("not root: the netns lab needs root".into());
            }
            if !command_ok("ip", &["-V"]) {
                return Some("the `ip` command (iproute2) is missing".into());
            }
            if !command_ok("iptables-restore", &["--version"]) {
                return Some("iptables is missing (apt-get install iptables)".into());
            }
            let ns = format!("lmq{}", std::process::id());
            if !command_ok("ip", &["netns", "add", &ns]) {
                return Some("cannot create a network namespace".into());
            }
            let ok = command_ok(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-A",
                    "FORWARD",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "0",
                ],
            );
            let _ = command_ok("ip", &["netns", "del", &ns]);
            (!ok).then(|| "iptables has no NFQUEUE target here".into())
        })
        .clone()
}

macro_rules! need_netns_lab {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The locks a netns lab test holds.
fn locks() -> (MutexGuard<'static, ()>, MutexGuard<'static, ()>) {
    let lab = NETLAB.lock().unwrap_or_else(|p| p.into_inner());
    (lab, timing_lock())
}

/// The `latmap-*` namespaces of this machine.
fn lab_namespaces() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("latmap-"))
        .map(str::to_string)
        .collect()
}

/// A test's folder, with its own lab records.
struct Place {
    dir: Dir,
    records: PathBuf,
    before: BTreeSet<String>,
}

impl Place {
    fn new() -> Place {
        let dir = Dir::new();
        let records = dir.join("labs");
        Place {
            dir,
            records,
            before: lab_namespaces(),
        }
    }

    fn env(&self) -> Vec<(&'static str, &OsStr)> {
        vec![("LATMAP_LAB_DIR", self.records.as_os_str())]
    }

    fn latmap(&self, args: &[&str]) -> Run {
        latmap_env(self.dir.path(), &self.env(), args)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_latmap"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("LATMAP_CONFIG")
            .env("LATMAP_LAB_DIR", &self.records)
            .stdin(Stdio::null());
        c
    }

    /// Records left in this test's folder.
    fn records_left(&self) -> Vec<String> {
        std::fs::read_dir(&self.records)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts that the machine's lab namespaces are those from before the test, and
    /// that no record is left, waiting up to `patience` (a reaper works after its
    /// owner's death).
    fn assert_clean(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let now = lab_namespaces();
            if now == self.before && self.records_left().is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "left behind: namespaces {:?}, records {:?}",
                    now.difference(&self.before).collect::<Vec<_>>(),
                    self.records_left()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Whatever happened, nothing of this test's labs stays.
        let _ = self.latmap(&["lab", "down", "--all"]);
    }
}

/// `latmap lab up` in the background, stopped (SIGTERM) when dropped.
struct Up {
    child: Child,
    log: PathBuf,
    record: Value,
}

impl Up {
    fn start(place: &Place, config: &str) -> Up {
        let log = place.dir.join("up.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = place
            .command(&["--config", config, "lab", "up"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start lab up");
        let mut up = Up {
            child,
            log,
            record: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = place.latmap(&["--config", config, "lab", "status", "--format", "json"]);
            if status.status == Some(0) {
                up.record = serde_json::from_str(&status.stdout).expect("status JSON");
                return up;
            }
            if let Ok(Some(exit)) = up.child.try_wait() {
                panic!("lab up exited with {exit}:\n{}", up.log());
            }
            assert!(
                Instant::now() < deadline,
                "the lab did not come up:\n{}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn namespace(&self, region: &str) -> String {
        self.region(region)["namespace"]
            .as_str()
            .expect("namespace")
            .to_string()
    }

    fn region(&self, name: &str) -> &Value {
        self.record["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no region {name} in {}", self.record))
    }

    fn truth(&self, source: &str, target: &str) -> (f64, f64) {
        let t = self.record["truth"]
            .as_array()
            .expect("truth")
            .iter()
            .find(|t| t["source"] == source && t["target"] == target)
            .expect("a truth");
        (
            t["rtt_ms"].as_f64().expect("rtt"),
            t["loss"].as_f64().expect("loss"),
        )
    }

    /// Stops the lab the way Ctrl-C would, and waits for it.
    fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The default lab (`regions.toml`) in netns mode with `kinds`.
fn netns_default_lab(kinds: &str) -> String {
    let text = std::fs::read_to_string(repo().join("regions.toml")).expect("root regions.toml");
    text.replacen("[lab]\n", "[lab]\nmode = \"netns\"\n", 1)
        .replacen("[probe]\n", &format!("[probe]\nkinds = {kinds}\n"), 1)
}

/// p50 must be within max(0.5 ms, 1%) of the emulated RTT.
fn tolerance_ms(truth_ms: f64) -> f64 {
    (truth_ms * 0.01).max(0.5)
}

/// Checks every path of every kind against `truth[(source, target)]`: its p50, and its
/// loss count in the exact 99% binomial interval (for tcp, a connect that needed its SYN
/// sent again is a lost first attempt too). Returns the p50 errors per kind.
fn check_every_kind(
    run: &Value,
    truth: &BTreeMap<(String, String), (Option<f64>, f64)>,
    kinds: &[&str],
) -> BTreeMap<String, Vec<f64>> {
    let paths = run["paths"].as_array().expect("paths");
    assert_eq!(
        paths.len(),
        truth.len() * kinds.len(),
        "one path per pair and kind"
    );
    let mut errors: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for p in paths {
        let kind = p["kind"].as_str().expect("kind").to_string();
        let key = (
            p["source"].as_str().expect("source").to_string(),
            p["target"].as_str().expect("target").to_string(),
        );
        let (rtt, loss) = truth
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected path {key:?}"));
        let sent = p["sent"].as_u64().expect("sent");
        let received = p["received"].as_u64().expect("received");
        let Some(want) = rtt else {
            assert_eq!(received, 0, "{key:?} {kind} is unreachable in the lab");
            continue;
        };
        let got = p["rtt_us"]["p50"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let err = got - want;
        errors.entry(kind.clone()).or_default().push(err);
        if err.is_nan() || err.abs() > tolerance_ms(*want) {
            failures.push(format!(
                "{key:?} {kind}: p50 {got:.3} ms, truth {want:.3} ms"
            ));
        }
        let retried = p["syn_retries"].as_u64().unwrap_or(0);
        let lost = sent - received + retried;
        let (lo, hi) = binomial_99(sent, *loss);
        if !(lo..=hi).contains(&lost) {
            failures.push(format!(
                "{key:?} {kind}: lost {lost} of {sent}, outside {lo}..={hi} for loss {loss:.4}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} paths off:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for (kind, e) in &errors {
        let mut s = e.clone();
        s.sort_by(f64::total_cmp);
        eprintln!(
            "{kind}: p50 − truth over {} paths: mean {:+.3} ms, min {:+.3}, max {:+.3}",
            s.len(),
            s.iter().sum::<f64>() / s.len() as f64,
            s[0],
            s[s.len() - 1]
        );
    }
    errors
}

#[test]
fn default_lab_in_netns_mode_matches_the_truth_for_icmp_udp_and_tcp() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    let text = netns_default_lab(r#"["icmp", "udp", "tcp"]"#);
    place.dir.write("regions.toml", &text);
    place.latmap(&["check"]).assert_ok();
    let out = place.latmap(&["sweep", "--out", "out"]);
    out.assert_ok();
    // The sweep's own lab is gone when it returns, not later.
    place.assert_clean(Duration::ZERO);
    let run = read_json(&place.dir.join("out/run.json"));
    let truth = crate::lab::geo_truth(&text);
    check_every_kind(&run, &truth, &["icmp", "udp", "tcp"]);
    for (region, h) in run["probers"].as_object().expect("probers") {
        // Each region's prober ran in its namespace and reached the others' kernels.
        assert_eq!(h["sockets"]["icmp-v4"], "raw", "{region}: {h}");
        // Replies came from the address probed: the wildcard reflector answers from
        // the service address, not the link's.
        assert_eq!(h["foreign_source"], 0, "{region}: {h}");
        assert_eq!(h["mismatched"], 0, "{region}: {h}");
        assert_eq!(h["queue_drops"], 0, "{region}: {h}");
    }
    // The detectors find the injected faults in every kind.
    for kind in ["icmp", "udp", "tcp"] {
        assert!(
            out.stdout
                .contains(&format!("CRITICAL  loss  eu-west-1 → us-east-1 ({kind})")),
            "{}",
            out.stdout
        );
    }
    assert!(
        out.stderr.contains("the lab's emulator held"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_matrix_lab_with_an_unreachable_path_and_loss_in_netns_mode() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let rtt = [
        [0.0, 12.0, 40.0, 7.5],
        [13.0, 0.0, 25.0, 60.0],
        [41.0, 24.0, 0.0, 3.0],
        [8.0, 61.0, 2.5, 0.0],
    ];
    let unreachable = (1usize, 3usize);
    let mut loss = [[0.0f64; 4]; 4];
    loss[0][1] = 20.0;
    loss[3][2] = 50.0;
    place.dir.write(
        "rtt.csv",
        &crate::lab::matrix_csv(&names, |i, j| {
            if (i, j) == unreachable {
                String::new()
            } else {
                rtt[i][j].to_string()
            }
        }),
    );
    place.dir.write(
        "loss.csv",
        &crate::lab::matrix_csv(&names, |i, j| loss[i][j].to_string()),
    );
    place.dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"icmp\", \"udp\", \"tcp\"]\ncount = 200\ninterval = \"10ms\"\ntimeout = \"500ms\"\n\n[lab]\nmode = \"netns\"\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"\njitter_ms = 1.0\n",
    );
    place.latmap(&["sweep", "--out", "out"]).assert_ok();
    place.assert_clean(Duration::ZERO);
    let run = read_json(&place.dir.join("out/run.json"));
    let mut truth = BTreeMap::new();
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                let r = ((i, j) != unreachable).then_some(rtt[i][j]);
                truth.insert(
                    (names[i].clone(), names[j].clone()),
                    (r, loss[i][j] / 100.0),
                );
            }
        }
    }
    check_every_kind(&run, &truth, &["icmp", "udp", "tcp"]);
}

#[test]
fn fping_in_a_region_agrees_with_the_truth() {
    need_netns_lab!();
    if !command_ok("fping", &["-v"]) {
        eprintln!("skipped: fping is not installed");
        return;
    }
    let _l = locks();
    let place = Place::new();
    place
        .dir
        .write("regions.toml", &netns_default_lab(r#"["icmp"]"#));
    let up = Up::start(&place, "regions.toml");
    // From Dublin to Virginia (15% loss), Frankfurt, Tokyo and Mumbai, at the
    // addresses `lab status` gives.
    let targets = ["us-east-1", "eu-central-1", "ap-northeast-1", "ap-south-1"];
    let addrs: Vec<String> = targets
        .iter()
        .map(|t| {
            up.region(t)["target"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .expect("target")
                .ip()
                .to_string()
        })
        .collect();
    let mut args = vec![
        "--config",
        "regions.toml",
        "lab",
        "exec",
        "eu-west-1",
        "--",
        "fping",
        "-q",
        "-C",
        "60",
        "-p",
        "20",
        "-t",
        "1000",
    ];
    args.extend(addrs.iter().map(String::as_str));
    let out = place.latmap(&args);
    // fping exits 1 when some probe got no reply (the lossy path).
    assert!(matches!(out.status, Some(0 | 1)), "{}", out.stderr);
    for (t, addr) in targets.iter().zip(&addrs) {
        let line = out
            .stderr
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr.as_str()))
            .unwrap_or_else(|| panic!("no fping line for {addr}: {}", out.stderr));
        let values: Vec<&str> = line
            .split(':')
            .nth(1)
            .expect("values")
            .split_whitespace()
            .collect();
        assert_eq!(values.len(), 60, "{line}");
        let mut rtts: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
        rtts.sort_by(f64::total_cmp);
        let (want, loss) = up.truth("eu-west-1", t);
        let p50 = rtts[rtts.len() / 2];
        eprintln!(
            "fping eu-west-1 → {t}: p50 {p50:.3} ms, truth {want:.3} ms, {} of 60 lost",
            60 - rtts.len()
        );
        assert!(
            (p50 - want).abs() <= tolerance_ms(want),
            "{t}: fping p50 {p50} ms, truth {want} ms"
        );
        let lost = (60 - rtts.len()) as u64;
        let (lo, hi) = binomial_99(60, loss);
        assert!(
            (lo..=hi).contains(&lost),
            "{t}: {lost} lost, outside {lo}..={hi}"
        );
    }
    let log = up.stop();
    assert!(log.contains("lab removed"), "{log}");
    place.assert_clean(Duration::ZERO);
}

/// Sends a forged ICMP echo reply (`from` → `to`, identifier `ident`, sequence `seq`)
/// through a raw socket of the calling thread's namespace.
fn send_forged_echo_reply(
    from: Ipv4Addr,
    to: Ipv4Addr,
    ident: u16,
    seq: u16,
) -> std::io::Result<()> {
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(255)),
    )?;
    let mut icmp = vec![0u8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    // What a latmap request carries: a probe number and a tag, guessed.
    icmp.extend_from_slice(&u32::from(seq).to_be_bytes());
    icmp.extend_from_slice(&0x5eed_u64.wrapping_mul(u64::from(seq)).to_be_bytes());
    icmp.resize(8 + 56, 0);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = 20 + icmp.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    p.extend_from_slice(&from.octets());
    p.extend_from_slice(&to.octets());
    p.extend_from_slice(&icmp);
    raw.send_to(&p, &SocketAddr::V4(SocketAddrV4::new(to, 0)).into())?;
    Ok(())
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Runs `f` on a thread inside the namespace `ns` (this test process is root).
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the namespace thread")
}

/// The UDP ports bound in namespace `ns`, other than `except`.
fn udp_ports(ns: &str, except: u16) -> Vec<u16> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Hnua"])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .filter(|&p| p != except)
        .collect()
}

#[test]
fn forged_replies_from_another_namespace_never_become_rtts() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    // a probes b (60 ms); a forger in c sends replies "from b" to a, which reach a after
    // half of c → b's... no: they travel c → a as requests of path b → a (2 ms each
    // way), far earlier than any true reply: taken as samples, they would read ~1 ms.
    place
        .dir
        .write("rtt.csv", ",a,b,c\na,,60,5\nb,2,,5\nc,5,5,\n");
    place.dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"icmp\", \"udp\"]\ncount = 150\ninterval = \"20ms\"\ntimeout = \"500ms\"\n\n[lab]\nmode = \"netns\"\nmatrix = \"rtt.csv\"\n",
    );
    let up = Up::start(&place, "regions.toml");
    let a_ns = up.namespace("a");
    let c_ns = up.namespace("c");
    let a: Ipv4Addr = up.region("a")["addresses"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let b_target: SocketAddr = up.region("b")["target"].as_str().unwrap().parse().unwrap();
    let SocketAddr::V4(b_target) = b_target else {
        panic!("IPv4")
    };
    let port = b_target.port();
    let mut sweep = place
        .command(&["sweep", "--region", "a", "--out", "out"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sweep");
    // The prober's STAMP socket, as an attacker who knows the port would aim at it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let prober_port = loop {
        if let Some(p) = udp_ports(&a_ns, port).first() {
            break *p;
        }
        assert!(Instant::now() < deadline, "no prober socket in {a_ns}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let forged = in_namespace(&c_ns, move || {
        let mut sent = 0u64;
        let stop = Instant::now() + Duration::from_millis(2500);
        let mut seq = 0u16;
        while Instant::now() < stop {
            for _ in 0..20 {
                // ICMP: every identifier and sequence is a guess.
                if send_forged_echo_reply(*b_target.ip(), a, seq.wrapping_mul(7919), seq).is_ok() {
                    sent += 1;
                }
                // STAMP: sequence numbers in order, timestamps guessed.
                let reply = latmap::probe::stamp::ReflectorPacket {
                    seq: u32::from(seq),
                    timestamp: latmap::probe::stamp::NtpTimestamp::now(),
                    error_estimate: latmap::probe::stamp::ERROR_ESTIMATE,
                    receive_timestamp: latmap::probe::stamp::NtpTimestamp::now(),
                    sender_seq: u32::from(seq),
                    sender_timestamp: latmap::probe::stamp::NtpTimestamp::now(),
                    sender_error_estimate: latmap::probe::stamp::ERROR_ESTIMATE,
                    sender_ttl: Some(64),
                };
                let mut out = [0u8; latmap::probe::stamp::PACKET_LEN];
                reply.encode(&mut out);
                if crate::stamp::send_spoofed(b_target, SocketAddrV4::new(a, prober_port), &out)
                    .is_ok()
                {
                    sent += 1;
                }
                seq = seq.wrapping_add(1);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    let status = sweep.wait().expect("sweep");
    assert!(status.success(), "the sweep failed");
    let run = read_json(&place.dir.join("out/run.json"));
    let h = &run["probers"]["a"];
    let refused: u64 = ["unmatched", "mismatched", "malformed"]
        .iter()
        .map(|k| h[k].as_u64().unwrap_or(0))
        .sum();
    eprintln!("forged {forged} replies; the prober refused {refused}: {h}");
    assert!(forged > 1000, "the forger sent {forged}");
    assert!(
        refused as f64 >= forged as f64 * 0.9,
        "most forgeries reach the prober and are counted: {refused} of {forged}"
    );
    for p in run["paths"].as_array().unwrap() {
        if p["target"] != "b" {
            continue;
        }
        let min = p["rtt_us"]["min"].as_f64().unwrap() / 1000.0;
        assert!(
            min > 59.0,
            "{} a → b: a sample of {min} ms is a forgery",
            p["kind"]
        );
        assert_eq!(p["received"], p["sent"], "{}", p["kind"]);
    }
    drop(up);
    place.assert_clean(Duration::from_secs(5));
}

/// One thread of this machine frozen (cgroup v1 freezer) until dropped: a prober's
/// thread kept from the CPU as long as a very busy machine might.
struct Frozen {
    group: PathBuf,
    tid: String,
}

impl Frozen {
    const ROOT: &'static str = "/sys/fs/cgroup/freezer";

    /// Why threads cannot be frozen here, if they cannot.
    fn unavailable() -> Option<String> {
        (!Path::new(Frozen::ROOT).join("tasks").exists())
            .then(|| format!("no cgroup v1 freezer at {}", Frozen::ROOT))
    }

    fn freeze(tid: &str) -> Frozen {
        let group = Path::new(Frozen::ROOT).join(format!("latmap-test-{}", std::process::id()));
        std::fs::create_dir_all(&group).expect("a freezer cgroup");
        let frozen = Frozen {
            group,
            tid: tid.to_string(),
        };
        std::fs::write(frozen.group.join("tasks"), tid).expect("move the thread");
        std::fs::write(frozen.group.join("freezer.state"), "FROZEN").expect("freeze");
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.group.join("freezer.state"), "THAWED");
        let _ = std::fs::write(Path::new(Frozen::ROOT).join("tasks"), &self.tid);
        let _ = std::fs::remove_dir(&self.group);
    }
}

/// The id of the thread of process `pid` whose name starts with `name` (names are cut
/// to 15 bytes), once it exists.
fn thread_of(pid: u32, name: &str, patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let found = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == &name[..name.len().min(15)])
            });
        if let Some(t) = found {
            return t.file_name().to_string_lossy().into_owned();
        }
        assert!(Instant::now() < deadline, "no thread {name} in {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_prober_whose_receive_loop_is_starved_loses_no_tcp_connect() {
    need_netns_lab!();
    if let Some(why) = Frozen::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let _l = locks();
    let place = Place::new();
    // 100 probes 20 ms apart with a 500 ms timeout; a's receive loop is frozen for
    // 1.5 s in the middle, so connects the kernel finished in 20 ms pass their timeout
    // before the loop can read them. The kernel's RTT says they were in time.
    place.dir.write("rtt.csv", ",a,b\na,,20\nb,20,\n");
    place.dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"udp\", \"tcp\"]\ncount = 100\ninterval = \"20ms\"\ntimeout = \"500ms\"\n\n[lab]\nmode = \"netns\"\nmatrix = \"rtt.csv\"\n",
    );
    let mut sweep = place
        .command(&["sweep", "--region", "a", "--out", "out"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sweep");
    let rx = thread_of(sweep.id(), "probe-rx-a", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    {
        let _frozen = Frozen::freeze(&rx);
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(sweep.wait().expect("sweep").success(), "the sweep failed");
    place.assert_clean(Duration::ZERO);
    let run = read_json(&place.dir.join("out/run.json"));
    // The freeze took: replies waited in the queue for about as long.
    let gap = run["probers"]["a"]["receive_gap_p99_us"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        gap > 1_000_000,
        "the receive loop was not held: {}",
        run["probers"]["a"]
    );
    for p in run["paths"].as_array().expect("paths") {
        assert_eq!(p["received"], p["sent"], "{} a → b: {p}", p["kind"]);
        assert_eq!(p["syn_retries"].as_u64().unwrap_or(0), 0, "{p}");
        let p50 = p["rtt_us"]["p50"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        assert!(
            (p50 - 20.0).abs() <= tolerance_ms(20.0),
            "{} p50 {p50}",
            p["kind"]
        );
        let max = p["rtt_us"]["max"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        assert!(
            max < 500.0,
            "{} a sample of {max} ms counts the freeze",
            p["kind"]
        );
    }
}

#[test]
fn a_lost_syn_shows_as_syn_retries() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    // 30% of a → b's round trips are lost; with a 3 s timeout the kernel's SYN (or
    // SYN-ACK) sent again after its initial 1 s timeout gets through.
    place.dir.write("rtt.csv", ",a,b\na,,20\nb,20,\n");
    place.dir.write("loss.csv", ",a,b\na,,30\nb,0,\n");
    place.dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"tcp\"]\ncount = 60\ninterval = \"20ms\"\ntimeout = \"3s\"\n\n[lab]\nmode = \"netns\"\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"\n",
    );
    place
        .latmap(&["sweep", "--region", "a", "--out", "out"])
        .assert_ok();
    place.assert_clean(Duration::ZERO);
    let run = read_json(&place.dir.join("out/run.json"));
    let p = crate::harness::path(&run, "a", "b");
    let retried = p["syn_retries"].as_u64().unwrap();
    let sent = p["sent"].as_u64().unwrap();
    let lost = sent - p["received"].as_u64().unwrap();
    eprintln!("a → b: {retried} syn retries, {lost} lost of {sent}: {p}");
    assert!(retried >= 5, "{p}");
    // A first attempt fails with the path's loss; those whose second attempt failed
    // too are lost outright.
    let (lo, hi) = binomial_99(sent, 0.3);
    assert!(
        (lo..=hi).contains(&(retried + lost)),
        "{retried} + {lost}: {p}"
    );
    // The retried connects took one initial RTO (1 s) more; the others the RTT.
    let samples: Vec<f64> = p["samples_us"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_f64)
        .map(|us| us / 1000.0)
        .collect();
    let slow = samples.iter().filter(|&&ms| ms > 900.0).count() as u64;
    assert_eq!(slow, retried, "{samples:?}");
    assert!(samples.iter().all(|&ms| ms > 19.5), "{samples:?}");
    let p50 = p["rtt_us"]["p50"].as_f64().unwrap() / 1000.0;
    assert!((p50 - 20.0).abs() <= 0.5, "{p50}");
}

#[test]
fn nothing_is_left_after_a_killed_sweep() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    place.dir.write(
        "regions.toml",
        &netns_default_lab(r#"["icmp", "udp", "tcp"]"#),
    );
    for signal in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut sweep = place
            .command(&["sweep", "--out", "out"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sweep");
        // Kill it while its lab is up and probing.
        let deadline = Instant::now() + Duration::from_secs(30);
        while lab_namespaces().len() < place.before.len() + 11 {
            assert!(Instant::now() < deadline, "the sweep's lab did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        let pid = nix::unistd::Pid::from_raw(sweep.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
        let status = sweep.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        match signal {
            nix::sys::signal::Signal::SIGKILL => {
                assert_eq!(status.signal(), Some(9));
                // Its reaper removes the lab in a moment.
                place.assert_clean(Duration::from_secs(5));
            }
            nix::sys::signal::Signal::SIGTERM => {
                assert_eq!(status.code(), Some(143));
                place.assert_clean(Duration::ZERO);
            }
            _ => {
                assert_eq!(status.code(), Some(130));
                place.assert_clean(Duration::ZERO);
            }
        }
        assert!(!place.dir.join("out/run.json").exists());
    }
}

#[test]
fn down_all_clears_a_lab_whose_owner_and_reaper_were_killed() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    place
        .dir
        .write("regions.toml", &netns_default_lab(r#"["icmp"]"#));
    let up = Up::start(&place, "regions.toml");
    let id = up.record["id"].as_str().unwrap().to_string();
    // Kill the reaper first, then the owner: nothing is left to clean up.
    let reaper = Command::new("pgrep")
        .args(["-f", &format!("lab reap {id}")])
        .output()
        .expect("pgrep");
    let reaper: i32 = String::from_utf8_lossy(&reaper.stdout)
        .trim()
        .parse()
        .expect("the reaper's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reaper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the reaper");
    let mut up = up;
    let _ = up.child.kill();
    let _ = up.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lab_namespaces().len(),
        place.before.len() + 11,
        "a leftover lab"
    );
    let status = place.latmap(&["lab", "status", "--all"]);
    assert!(status.stdout.contains("leftover"), "{}", status.stdout);
    // A namespace the lab did not make, with a name like its own, is left alone.
    let foreign = format!("latmap-{id}x-core");
    assert!(command_ok("ip", &["netns", "add", &foreign]));
    let down = place.latmap(&["lab", "down", "--all"]);
    down.assert_ok();
    assert!(
        down.stderr.contains(&format!("removed leftover lab {id}")),
        "{}",
        down.stderr
    );
    assert!(lab_namespaces().contains(&foreign));
    assert!(command_ok("ip", &["netns", "del", &foreign]));
    place.assert_clean(Duration::ZERO);
}

#[test]
fn without_nfqueue_or_without_root_the_lab_says_so_and_leaves_nothing() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    place
        .dir
        .write("regions.toml", &netns_default_lab(r#"["icmp"]"#));
    // An iptables that cannot queue (as without xt_NFQUEUE): the lab fails half-way,
    // with its namespaces made, and removes them.
    let bin = place.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("iptables-restore");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"iptables-restore v1.8.9: Couldn't load target \\`NFQUEUE':No such file or directory\" >&2\nexit 2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = place.env();
    env.push(("PATH", OsStr::new(&path)));
    let out = latmap_env(place.dir.path(), &env, &["sweep"]);
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("-j NFQUEUE"), "{}", out.stderr);
    assert!(out.stderr.contains("mode = \"loopback\""), "{}", out.stderr);
    place.assert_clean(Duration::ZERO);

    // Without root, from a folder anyone may read.
    if !command_ok("setpriv", &["--version"]) {
        eprintln!("skipped the unprivileged half: setpriv (util-linux) is missing");
        return;
    }
    let open = tempfile::tempdir().expect("a folder");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = open.path().join("regions.toml");
    std::fs::copy(place.dir.join("regions.toml"), &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_latmap"))
        .args(["--config", &config.display().to_string(), "sweep", "--out"])
        .arg(open.path().join("out"))
        .env("LATMAP_LAB_DIR", open.path().join("labs"))
        .current_dir(open.path())
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the netns lab needs root"), "{stderr}");
    assert!(stderr.contains("mode = \"loopback\""), "{stderr}");
    place.assert_clean(Duration::ZERO);
}

#[test]
fn agents_in_the_regions_and_the_aggregator_in_the_core_assemble_runs() {
    need_netns_lab!();
    let _l = locks();
    let place = Place::new();
    let dir = &place.dir;
    dir.write("rtt.csv", ",a,b,c\na,,20,30\nb,21,,40\nc,31,41,\n");
    dir.write(
        "lab.toml",
        "[probe]\nkinds = [\"icmp\", \"udp\", \"tcp\"]\ncount = 10\ninterval = \"10ms\"\ntimeout = \"500ms\"\n\n[lab]\nmode = \"netns\"\nmatrix = \"rtt.csv\"\n",
    );
    dir.write("token", "0123456789abcdef-netns-lab-token\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let up = Up::start(&place, "lab.toml");
    let core = up.record["core"]["namespace"]
        .as_str()
        .expect("core")
        .to_string();
    let core_addr = up.record["core"]["address"]
        .as_str()
        .expect("address")
        .to_string();
    let listen = format!("{core_addr}:8455");
    let latmap = env!("CARGO_BIN_EXE_latmap");
    // docs/deploy.md: the aggregator, here in the core namespace ...
    let server_log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut server = place
        .command(&[
            "--config",
            "lab.toml",
            "lab",
            "exec",
            "--core",
            "--",
            latmap,
            "serve",
            "--listen",
            &listen,
            "--data",
            "data",
            "--token-file",
            "token",
            "--deadline",
            "60s",
        ])
        .stdout(Stdio::null())
        .stderr(server_log)
        .spawn()
        .expect("serve");
    let addr: SocketAddr = listen.parse().unwrap();
    let ask = |path: &'static str| {
        in_namespace(&core, move || {
            crate::service::http(addr, "GET", path, &[], None)
        })
    };
    crate::service::until(
        Duration::from_secs(30),
        "the server answers in the core",
        || ask("/healthz").ok().filter(|a| a.status == 200),
    );
    // ... and one agent in each region's namespace, sharing the lab that is up. A run
    // is complete when the three report the same epoch: started 100 ms after an epoch
    // boundary (of --every, 2 s), they share their first one (see the remote outage
    // test).
    crate::service::sleep_past_an_epoch(Duration::from_secs(2), Duration::from_millis(100));
    let url = format!("http://{listen}");
    let mut agents: Vec<(String, Child)> = ["a", "b", "c"]
        .iter()
        .map(|r| {
            let log = std::fs::File::create(dir.join(&format!("agent-{r}.log"))).unwrap();
            let spool = format!("spool/{r}");
            let child = place
                .command(&[
                    "--config",
                    "lab.toml",
                    "lab",
                    "exec",
                    r,
                    "--",
                    latmap,
                    "--config",
                    "lab.toml",
                    "agent",
                    "--region",
                    r,
                    "--aggregator",
                    &url,
                    "--token-file",
                    "token",
                    "--every",
                    "2s",
                    "--sweeps",
                    "2",
                    "--spool",
                    &spool,
                    "--retry-max",
                    "2s",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("agent");
            (r.to_string(), child)
        })
        .collect();
    for (r, child) in &mut agents {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "agent {r} did not finish");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(dir.join(&format!("agent-{r}.log"))).unwrap_or_default();
        assert!(status.success(), "agent {r}:\n{log}");
    }
    let runs = crate::service::until(Duration::from_secs(60), "two assembled runs", || {
        let a = ask("/v1/runs").ok()?;
        let runs = a.json().as_array().cloned()?;
        (runs.iter().filter(|r| r["complete"] == true).count() >= 2).then_some(runs)
    });
    for r in runs.iter().filter(|r| r["complete"] == true) {
        assert_eq!(r["reported"], serde_json::json!(["a", "b", "c"]), "{r}");
    }
    let latest = ask("/v1/runs/latest").expect("latest").json();
    let paths = latest["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 18, "3 × 2 pairs × 3 kinds");
    let truth: BTreeMap<(&str, &str), f64> = [
        (("a", "b"), 20.0),
        (("a", "c"), 30.0),
        (("b", "a"), 21.0),
        (("b", "c"), 40.0),
        (("c", "a"), 31.0),
        (("c", "b"), 41.0),
    ]
    .into_iter()
    .collect();
    for p in paths {
        let key = (p["source"].as_str().unwrap(), p["target"].as_str().unwrap());
        let want = truth[&key];
        let got = p["rtt_us"]["p50"].as_f64().unwrap() / 1000.0;
        assert!(
            (got - want).abs() <= tolerance_ms(want),
            "{key:?} {}: {got} vs {want}",
            p["kind"]
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    up.stop();
    place.assert_clean(Duration::ZERO);
}
