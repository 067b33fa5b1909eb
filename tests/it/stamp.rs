//! STAMP and TWAMP Light against peers latmap did not write, and against hostile ones:
//! stamp-suite (an independent RFC 8762/8972 implementation) in both directions,
//! TWAMP-Light-shaped senders and reflectors written here, a wildcard reflector on a
//! host with several addresses, forged replies, forged requests and floods.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latmap::probe::stamp::{
    ERROR_ESTIMATE, NtpTimestamp, PACKET_LEN, ReflectorPacket, SenderPacket,
};
use serde_json::Value;

use crate::harness::{Dir, timing_lock};

/// A free UDP port on loopback (free a moment ago).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `latmap reflect` as a child process, stopped (SIGINT) on drop.
struct Reflect {
    child: Option<Child>,
}

impl Reflect {
    fn start(args: &[&str]) -> Reflect {
        let child = Command::new(env!("CARGO_BIN_EXE_latmap"))
            .arg("reflect")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start latmap reflect");
        std::thread::sleep(Duration::from_millis(300));
        Reflect { child: Some(child) }
    }

    /// Stops it and returns what it printed.
    fn stop(mut self) -> String {
        let child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let out = child.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Reflect {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number after `label` in the reflector's closing summary.
fn count_before(summary: &str, label: &str) -> u64 {
    let at = summary
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} not in {summary}"));
    summary[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {summary}"))
}

/// `latmap ping ARGS --format json`, its exit code and output.
fn ping_json(args: &[&str]) -> (Option<i32>, Value) {
    let dir = Dir::new();
    let mut all = vec!["ping", "--format", "json", "-q"];
    all.extend_from_slice(args);
    let out = dir.latmap(&all);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status, v)
}

/// A STAMP request by hand.
fn request(seq: u32, len: usize) -> (Vec<u8>, NtpTimestamp) {
    let t1 = NtpTimestamp::now();
    let mut buf = vec![0u8; len];
    SenderPacket {
        seq,
        timestamp: t1,
        error_estimate: ERROR_ESTIMATE,
    }
    .encode(&mut buf);
    (buf, t1)
}

/// Where stamp-suite is: `LATMAP_STAMP_SUITE`, the PATH, or where `.ci/run` installs it.
fn stamp_suite() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LATMAP_STAMP_SUITE").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/latmap-tools/bin/stamp-suite")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    found.or_else(|| {
        Command::new("stamp-suite")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from("stamp-suite"))
    })
}

#[test]
fn stamp_suite_sender_measures_against_latmap_reflect() {
    let Some(suite) = stamp_suite() else {
        eprintln!(
            "skipped: stamp-suite is not installed (`cargo install stamp-suite --locked`; .ci/run does it)"
        );
        return;
    };
    let _t = timing_lock();
    let port = free_port();
    let reflector = Reflect::start(&["--listen", &format!("0.0.0.0:{port}")]);
    // To two addresses of this host: the wildcard reflector answers from each.
    for target in ["127.0.0.1", "127.4.0.9"] {
        let out = Command::new(&suite)
            .args([
                "-r",
                target,
                "-p",
                &port.to_string(),
                "-S",
                "127.0.0.1",
                "-c",
                "20",
                "-d",
                "5",
            ])
            .output()
            .expect("run stamp-suite");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("Packets received: 20"),
            "stamp-suite to {target} did not get all 20 replies:\n{text}"
        );
    }
    let summary = reflector.stop();
    assert_eq!(count_before(&summary, "packets;"), 40, "{summary}");
}

#[test]
fn latmap_sender_measures_against_stamp_suite_reflector() {
    let Some(suite) = stamp_suite() else {
        eprintln!(
            "skipped: stamp-suite is not installed (`cargo install stamp-suite --locked`; .ci/run does it)"
        );
        return;
    };
    let _t = timing_lock();
    let port = free_port().to_string();
    let mut child = Command::new(&suite)
        .args(["-i", "-S", "127.0.0.1", "-o", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the stamp-suite reflector");
    // Measured once the reflector holds its port (a fixed wait was too short on a
    // busy machine: every probe went out before it listened). The kernel's table of
    // UDP sockets says so without touching the port.
    let bound = Instant::now();
    let listening = |port: u16| {
        std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| local.ends_with(&format!(":{port:04X}")))
        })
    };
    let number: u16 = port.parse().expect("port");
    while !listening(number) {
        assert!(
            bound.elapsed() < Duration::from_secs(15),
            "the stamp-suite reflector did not bind 127.0.0.1:{port} within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = format!("127.0.0.1:{port}");
    let (status, run) = ping_json(&["--kind", "udp", &target, "-c", "30", "-p", "5ms"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(0), "{run}");
    let p = &run["paths"][0];
    assert_eq!(
        (p["sent"].as_u64(), p["received"].as_u64()),
        (Some(30), Some(30)),
        "{p}"
    );
    assert!(p["rtt_us"]["max"].as_u64().unwrap() < 50_000, "{p}");
    // stamp-suite copies the request's TTL, as RFC 8762 asks.
    assert_eq!(p["arrival_ttl"], 64, "{p}");
    let h = &run["prober"];
    assert_eq!(
        (h["mismatched"].as_u64(), h["malformed"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
}

#[test]
fn twamp_light_senders_get_answers_from_latmap_reflect() {
    let _t = timing_lock();
    let port = free_port();
    let reflector = Reflect::start(&["--listen", &format!("127.0.0.1:{port}")]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = format!("127.0.0.1:{port}");
    // The 14-byte minimum, 41 bytes, and 60 bytes of pseudo-random padding.
    for (len, random_padding) in [(14, false), (41, false), (60, true)] {
        let (mut req, t1) = request(1000 + len as u32, len);
        if random_padding {
            for (i, b) in req[14..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(151).wrapping_add(7);
            }
        }
        sock.send_to(&req, &to).unwrap();
        let mut buf = [0u8; 200];
        let (n, _) = sock.recv_from(&mut buf).expect("a reply");
        assert_eq!(n, len.max(41), "reply size for a {len}-byte request");
        let reply = ReflectorPacket::decode(&buf[..n]).unwrap();
        assert_eq!(
            (reply.sender_seq, reply.seq, reply.sender_timestamp),
            (1000 + len as u32, 1000 + len as u32, t1)
        );
        assert_eq!(reply.sender_error_estimate, ERROR_ESTIMATE);
        assert!(reply.timestamp >= reply.receive_timestamp);
        assert_eq!(reply.sender_ttl, Some(64));
        assert_eq!(&buf[14..16], &[0, 0], "MBZ");
        assert!(
            buf[41..n].iter().all(|&b| b == 0),
            "padding comes back zeroed"
        );
    }
    // Shorter than any test packet: ignored.
    sock.send_to(&[1u8; 13], &to).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(sock.recv_from(&mut [0u8; 64]).is_err());
    let summary = reflector.stop();
    assert_eq!(count_before(&summary, "packets;"), 3, "{summary}");
    assert_eq!(count_before(&summary, "too short"), 1, "{summary}");
}

/// A reflector written here, TWAMP-Light style: it answers each request with `len`
/// bytes of the RFC 5357 layout (`len` 38: without the TTL and what follows).
fn twamp_light_reflector(len: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 200];
        let mut seq = 0u32;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let t2 = NtpTimestamp::now();
            let Ok(req) = SenderPacket::decode(&buf[..n]) else {
                continue;
            };
            let mut reply = vec![0u8; 41];
            ReflectorPacket {
                seq, // a stateful reflector numbers its own replies
                timestamp: NtpTimestamp::now(),
                error_estimate: ERROR_ESTIMATE,
                receive_timestamp: t2,
                sender_seq: req.seq,
                sender_timestamp: req.timestamp,
                sender_error_estimate: req.error_estimate,
                sender_ttl: Some(61),
            }
            .encode(&mut reply);
            seq += 1;
            let _ = sock.send_to(&reply[..len], from);
        }
    });
    (addr, handle)
}

#[test]
fn latmap_sender_accepts_twamp_light_reflectors() {
    let _t = timing_lock();
    let (full, a) = twamp_light_reflector(41);
    let (short, b) = twamp_light_reflector(38);
    let (status, run) = ping_json(&[
        "--kind",
        "udp",
        &full.to_string(),
        &short.to_string(),
        "-c",
        "20",
        "-p",
        "5ms",
    ]);
    assert_eq!(status, Some(0), "{run}");
    for (p, ttl) in run["paths"]
        .as_array()
        .unwrap()
        .iter()
        .zip([Value::from(61), Value::Null])
    {
        assert_eq!(p["received"], 20, "{p}");
        assert_eq!(p["arrival_ttl"], ttl, "{p}");
    }
    assert_eq!(run["prober"]["malformed"], 0);
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn a_wildcard_reflector_replies_from_the_address_it_was_asked_at() {
    let _t = timing_lock();
    let port = free_port();
    let v6 = UdpSocket::bind("[::1]:0").is_ok();
    let mut args = vec!["--listen".to_string(), format!("0.0.0.0:{port}")];
    if v6 {
        args.extend(["--listen".to_string(), format!("[::]:{port}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reflector = Reflect::start(&args);
    let mut asked: Vec<IpAddr> = ["127.0.0.1", "127.1.0.5", "127.200.3.4"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    if v6 {
        asked.push("::1".parse().unwrap());
    }
    for ip in &asked {
        let sock = UdpSocket::bind(SocketAddr::new(
            if ip.is_ipv6() {
                "::1".parse().unwrap()
            } else {
                "127.0.0.1".parse().unwrap()
            },
            0,
        ))
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (req, _) = request(7, PACKET_LEN);
        sock.send_to(&req, SocketAddr::new(*ip, port)).unwrap();
        let mut buf = [0u8; 100];
        let (_, from) = sock.recv_from(&mut buf).expect("a reply");
        assert_eq!(
            from,
            SocketAddr::new(*ip, port),
            "the reply must come from the address asked"
        );
    }
    // And latmap's own sender, to addresses other than the one the kernel would choose.
    let targets: Vec<String> = asked
        .iter()
        .map(|ip| SocketAddr::new(*ip, port).to_string())
        .collect();
    let mut ping = vec!["--kind", "udp", "-c", "10", "-p", "5ms"];
    ping.extend(targets.iter().map(String::as_str));
    let (status, run) = ping_json(&ping);
    assert_eq!(status, Some(0), "{run}");
    for p in run["paths"].as_array().unwrap() {
        assert_eq!(p["received"], 10, "{p}");
    }
    assert_eq!(run["prober"]["foreign_source"], 0, "{}", run["prober"]);
    reflector.stop();
}

#[test]
fn forged_replies_never_become_samples() {
    let _t = timing_lock();
    // A hostile "reflector": it sees every probe (it is the target) and answers each
    // with forgeries: a wrong echoed timestamp, a guessed next sequence number, T3
    // before T2, and a dwell longer than the round trip. Every other probe also gets
    // one true answer, but from another address (which counts, as foreign).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.0.9:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let target = sock.local_addr().unwrap();
    let forger = std::thread::spawn(move || {
        let mut buf = [0u8; 200];
        let mut n_req = 0;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(req) = SenderPacket::decode(&buf[..n]) else {
                continue;
            };
            let now = NtpTimestamp::now();
            let good = ReflectorPacket {
                seq: req.seq,
                timestamp: now,
                error_estimate: ERROR_ESTIMATE,
                receive_timestamp: now,
                sender_seq: req.seq,
                sender_timestamp: req.timestamp,
                sender_error_estimate: req.error_estimate,
                sender_ttl: Some(64),
            };
            let forged = [
                ReflectorPacket {
                    sender_timestamp: NtpTimestamp(req.timestamp.0 ^ 1),
                    ..good
                },
                ReflectorPacket {
                    sender_seq: req.seq.wrapping_add(1),
                    ..good
                },
                ReflectorPacket {
                    receive_timestamp: NtpTimestamp(now.0 + (1 << 32)),
                    ..good
                },
                ReflectorPacket {
                    receive_timestamp: NtpTimestamp(now.0 - (10 << 32)),
                    ..good
                },
            ];
            for f in forged {
                let mut out = [0u8; PACKET_LEN];
                f.encode(&mut out);
                let _ = sock.send_to(&out, from);
            }
            if n_req % 2 == 0 {
                let mut out = [0u8; PACKET_LEN];
                good.encode(&mut out);
                let _ = other.send_to(&out, from);
            }
            n_req += 1;
        }
    });
    let (status, run) = ping_json(&[
        "--kind",
        "udp",
        &target.to_string(),
        "-c",
        "40",
        "-p",
        "5ms",
        "-t",
        "500ms",
    ]);
    forger.join().unwrap();
    assert_eq!(status, Some(0), "{run}");
    let p = &run["paths"][0];
    assert_eq!(p["received"], 20, "only the true answers count: {p}");
    assert!(
        p["rtt_us"]["max"].as_u64().unwrap() < 100_000,
        "no absurd sample: {p}"
    );
    let h = &run["prober"];
    assert_eq!(h["foreign_source"], 20, "{h}");
    assert_eq!(
        h["malformed"], 80,
        "T3 before T2, and dwell above the RTT: {h}"
    );
    let refused = h["mismatched"].as_u64().unwrap() + h["unmatched"].as_u64().unwrap();
    assert_eq!(refused, 80, "wrong echo, guessed sequence: {h}");
}

/// Sends `payload` in a UDP datagram with a forged source address (a raw socket with
/// our own IP header; root only).
pub(crate) fn send_spoofed(
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> std::io::Result<()> {
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(255)), // IPPROTO_RAW: the header is ours
    )?;
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // DF, TTL 64, UDP; checksum by the kernel
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum
    p.extend_from_slice(payload);
    raw.send_to(&p, &SocketAddr::V4(to).into())?;
    Ok(())
}

#[test]
fn reflectors_do_not_bounce_a_forged_packet() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: forging a source address needs a raw socket (root)");
        return;
    }
    let _t = timing_lock();
    let (pa, pb) = (free_port(), free_port());
    let a = Reflect::start(&["--listen", &format!("127.0.0.1:{pa}")]);
    let b = Reflect::start(&["--listen", &format!("127.0.0.1:{pb}")]);
    let lo = Ipv4Addr::LOCALHOST;
    let (zeroed, _) = request(99, PACKET_LEN);
    let mut random = [0u8; PACKET_LEN];
    for (i, x) in random.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    for payload in [&zeroed[..], &random[..]] {
        // "From A" to B: B answers A, and A must not answer B's reply.
        send_spoofed(
            SocketAddrV4::new(lo, pa),
            SocketAddrV4::new(lo, pb),
            payload,
        )
        .unwrap();
        // "From B" to B: B must not talk to itself.
        send_spoofed(
            SocketAddrV4::new(lo, pb),
            SocketAddrV4::new(lo, pb),
            payload,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (sa, sb) = (a.stop(), b.stop());
    assert_eq!(
        count_before(&sb, "packets;"),
        2,
        "B answers the two forged requests once: {sb}"
    );
    assert_eq!(count_before(&sb, "from our own address"), 2, "{sb}");
    assert_eq!(
        count_before(&sa, "packets;"),
        0,
        "A never answers a reply: {sa}"
    );
    assert_eq!(count_before(&sa, "replies"), 2, "{sa}");
}

#[test]
fn a_reflector_caps_its_replies_per_source() {
    let _t = timing_lock();
    let port = free_port();
    let reflector = Reflect::start(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--rate-limit",
        "100",
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let to = format!("127.0.0.1:{port}");
    let start = Instant::now();
    for seq in 0..2000 {
        let (req, _) = request(seq, PACKET_LEN);
        sock.send_to(&req, &to).unwrap();
    }
    let mut answered = 0u64;
    let mut buf = [0u8; 100];
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let summary = reflector.stop();
    // A burst of 100, then 100 a second for as long as the flood lasted.
    let most = 100.0 + 100.0 * elapsed + 1.0;
    assert!(
        answered >= 100 && (answered as f64) <= most,
        "{answered} replies in {elapsed:.2} s; at most {most:.0}: {summary}"
    );
    let limited = count_before(&summary, "over the rate limit");
    assert_eq!(limited + answered, 2000, "{summary}");
}

#[test]
fn a_reflector_that_cannot_bind_says_why() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = Dir::new();
    let out = dir.latmap(&["reflect", "--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("in use") && out.stderr.contains("ss -lnp"),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&["reflect", "--listen", "192.0.2.77:8620"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("not an address of this host"),
        "{}",
        out.stderr
    );
    // A privileged port, as a user that may not bind one.
    if nix::unistd::geteuid().is_root() && Command::new("setpriv").arg("--version").output().is_ok()
    {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(env!("CARGO_BIN_EXE_latmap"))
            .args(["reflect", "--listen", "127.0.0.1:862"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("ports below 1024"), "{stderr}");
    } else {
        eprintln!("skipped the privileged-port case: needs root and setpriv to drop to nobody");
    }
}
