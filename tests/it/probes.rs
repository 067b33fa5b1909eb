//! Each probe kind against real sockets on loopback.

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use crate::harness::{Dir, can_ping, path, read_json, timing_lock};

#[test]
fn icmp_reaches_ipv4_and_ipv6_loopback() {
    if !can_ping() {
        eprintln!(
            "skipped: no ICMP socket allowed (not root, and net.ipv4.ping_group_range excludes us)"
        );
        return;
    }
    let _t = timing_lock();
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        r#"
[probe]
kinds = ["icmp"]
count = 20
interval = "5ms"

[[region]]
name = "v4"
source = "127.0.0.1"
targets = ["127.0.0.1"]

[[region]]
name = "v6"
source = "::1"
targets = ["::1"]

[[region]]
name = "by-name"
source = "127.0.0.1"
targets = ["localhost"]
"#,
    );
    let out = dir.latmap(&["sweep", "-v"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("ICMPv4 socket") && out.stderr.contains("ICMPv6 socket"),
        "{}",
        out.stderr
    );
    let run = read_json(&dir.join("latmap-out/run.json"));
    for (s, t, addr) in [
        ("v4", "v6", "::1"),
        ("v6", "v4", "127.0.0.1"),
        ("v6", "by-name", "127.0.0.1"),
    ] {
        let p = path(&run, s, t);
        assert_eq!(p["kind"], "icmp");
        assert_eq!(p["address"], addr);
        assert_eq!(
            (p["sent"].as_u64(), p["received"].as_u64()),
            (Some(20), Some(20)),
            "{p}"
        );
        let rtt = &p["rtt_us"];
        assert!(
            rtt["max"].as_u64().unwrap() < 100_000,
            "loopback RTT under 100 ms: {rtt}"
        );
        assert_eq!(p["samples_us"].as_array().unwrap().len(), 20);
        let sockets = &run["probers"][s]["sockets"];
        assert!(
            sockets
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == "raw" || v == "datagram"),
            "{sockets}"
        );
    }
    // The hostname was resolved once, and the lookup time is kept.
    let named = path(&run, "v4", "by-name");
    assert_eq!(named["target_spec"], "localhost");
    assert_eq!(named["address"], "127.0.0.1");
    assert!(named["resolve_us"].as_u64().is_some(), "{named}");
}

#[test]
fn icmp_survives_ten_thousand_replies_in_flight() {
    if !can_ping() {
        eprintln!("skipped: no ICMP socket allowed");
        return;
    }
    let _t = timing_lock();
    let dir = Dir::new();
    // Four loopback targets x 2,500 probes, sent back to back (gap 0, no interval): up
    // to 10,000 replies queue on one socket before the receive task drains them.
    let mut text = String::from(
        "[probe]\nkinds = [\"icmp\"]\ncount = 2500\ninterval = \"0s\"\ngap = \"0s\"\ntimeout = \"5s\"\n\n",
    );
    text.push_str(
        "[[region]]\nname = \"src\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1\"]\n",
    );
    for i in 2..=5 {
        text.push_str(&format!(
            "\n[[region]]\nname = \"dst-{i}\"\ntargets = [\"127.0.0.{i}\"]\n"
        ));
    }
    dir.write("regions.toml", &text);
    dir.latmap(&["sweep", "--region", "src"]).assert_ok();
    let run = read_json(&dir.join("latmap-out/run.json"));
    let received: u64 = run["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["received"].as_u64().unwrap())
        .sum();
    assert_eq!(received, 10_000);
}

#[test]
fn tcp_connect_to_open_and_closed_ports() {
    let _t = timing_lock();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    // A port that was free a moment ago and has no listener now.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        &format!(
            r#"
[probe]
kinds = ["tcp"]
count = 5
interval = "10ms"
timeout = "5s"

[[region]]
name = "src"
source = "127.0.0.1"
targets = ["127.0.0.1:{open}"]

[[region]]
name = "open"
targets = ["127.0.0.1:{open}"]

[[region]]
name = "closed"
targets = ["127.0.0.1:{closed}"]
"#
        ),
    );
    let start = Instant::now();
    dir.latmap(&["sweep", "--region", "src"]).assert_ok();
    // A refused connect answers at once: the sweep does not wait out the 5 s timeouts.
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "took {:?}",
        start.elapsed()
    );
    let run = read_json(&dir.join("latmap-out/run.json"));
    let o = path(&run, "src", "open");
    assert_eq!(
        (
            o["sent"].as_u64(),
            o["received"].as_u64(),
            o["refused"].as_u64()
        ),
        (Some(5), Some(5), Some(0))
    );
    assert_eq!(o["address"], format!("127.0.0.1:{open}"));
    let c = path(&run, "src", "closed");
    assert_eq!(
        (
            c["sent"].as_u64(),
            c["received"].as_u64(),
            c["refused"].as_u64()
        ),
        (Some(5), Some(0), Some(5))
    );
    assert!(c["rtt_us"].is_null());
    assert_eq!(c["loss"].as_f64(), Some(1.0));
    // Only the probing region reported; the others are "no data".
    assert_eq!(run["regions"][1]["reported"], false);
}

#[test]
fn stamp_reflector_answers_and_counts_bad_packets() {
    let _t = timing_lock();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let reflector = std::process::Command::new(env!("CARGO_BIN_EXE_latmap"))
        .args(["reflect", "--listen", &listen])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A packet too short to be STAMP: counted and ignored, never answered.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    probe.send_to(b"hello", &listen).unwrap();
    assert!(
        probe.recv_from(&mut [0u8; 100]).is_err(),
        "a bad packet got an answer"
    );
    // A well-formed request by hand: the reply carries our sequence number and
    // timestamp, T2 <= T3, and the TTL our request arrived with (the host's default).
    {
        use latmap::probe::stamp::{
            ERROR_ESTIMATE, NtpTimestamp, PACKET_LEN, ReflectorPacket, SenderPacket,
        };
        let t1 = NtpTimestamp::now();
        let mut req = [0u8; PACKET_LEN];
        SenderPacket {
            seq: 4242,
            timestamp: t1,
            error_estimate: ERROR_ESTIMATE,
        }
        .encode(&mut req);
        probe.set_ttl(47).unwrap();
        probe.send_to(&req, &listen).unwrap();
        let mut buf = [0u8; 100];
        let (n, _) = probe.recv_from(&mut buf).expect("a reply");
        let reply = ReflectorPacket::decode(&buf[..n]).unwrap();
        assert_eq!(
            (reply.sender_seq, reply.seq, reply.sender_timestamp),
            (4242, 4242, t1)
        );
        assert!(
            reply.timestamp >= reply.receive_timestamp,
            "T3 before T2: {reply:?}"
        );
        assert_eq!(reply.sender_ttl, Some(47), "{reply:?}");
    }
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        &format!(
            "[probe]\nkinds = [\"udp\"]\ncount = 10\ninterval = \"5ms\"\n\n[[region]]\nname = \"here\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1:1\"]\n\n[[region]]\nname = \"there\"\ntargets = [\"{listen}\"]\n"
        ),
    );
    dir.latmap(&["sweep", "--region", "here"]).assert_ok();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reflector.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = reflector.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reflected 11 packets; ignored 1 too short, 0 replies"),
        "{stderr}"
    );
    let run = read_json(&dir.join("latmap-out/run.json"));
    let p = path(&run, "here", "there");
    assert_eq!(
        (p["sent"].as_u64(), p["received"].as_u64()),
        (Some(10), Some(10))
    );
    assert!(p["rtt_us"]["p50"].as_u64().unwrap() < 50_000);
}

/// A listener on loopback that does not accept, with its accept queue (backlog 0)
/// already taken by one connection: the kernel drops further SYNs until someone
/// accepts. Returns the listener, its port and the queued connection.
fn full_accept_queue() -> (TcpListener, u16, std::net::TcpStream) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let listener: TcpListener = listener.into();
    let port = listener.local_addr().unwrap().port();
    let queued = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    (listener, port, queued)
}

#[test]
fn tcp_connect_that_gets_no_answer_is_lost_not_refused() {
    let _t = timing_lock();
    // A listener that never accepts, with its accept queue already full: the kernel
    // drops further SYNs, so a connect neither succeeds nor is refused.
    let (_listener, port, _queued) = full_accept_queue();
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        &format!(
            "[probe]\nkinds = [\"tcp\"]\ncount = 3\ninterval = \"10ms\"\ntimeout = \"300ms\"\n\n[[region]]\nname = \"src\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1:{port}\"]\n\n[[region]]\nname = \"full\"\ntargets = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    dir.latmap(&["sweep", "--region", "src"]).assert_ok();
    let run = read_json(&dir.join("latmap-out/run.json"));
    let p = path(&run, "src", "full");
    assert_eq!(
        (
            p["sent"].as_u64(),
            p["received"].as_u64(),
            p["refused"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{p}"
    );
    assert_eq!(p["samples_us"], serde_json::json!([null, null, null]));
}

/// A STAMP reflector that holds every request 30 ms between its receive (T2) and
/// transmit (T3) timestamps, as a busy reflector would.
fn slow_reflector(dwell: Duration) -> std::net::SocketAddr {
    use latmap::probe::stamp::{
        ERROR_ESTIMATE, NtpTimestamp, PACKET_LEN, ReflectorPacket, SenderPacket,
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let t2 = NtpTimestamp::now();
            let Ok(req) = SenderPacket::decode(&buf[..len]) else {
                continue;
            };
            std::thread::sleep(dwell);
            let mut reply = vec![0u8; len.max(PACKET_LEN)];
            ReflectorPacket {
                seq: req.seq,
                timestamp: NtpTimestamp::now(),
                error_estimate: ERROR_ESTIMATE,
                receive_timestamp: t2,
                sender_seq: req.seq,
                sender_timestamp: req.timestamp,
                sender_error_estimate: req.error_estimate,
                sender_ttl: None,
            }
            .encode(&mut reply);
            let _ = socket.send_to(&reply, from);
        }
    });
    addr
}

#[test]
fn stamp_rtt_excludes_the_reflectors_dwell_time() {
    let _t = timing_lock();
    let slow = slow_reflector(Duration::from_millis(30));
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        &format!(
            "[probe]\nkinds = [\"udp\"]\ncount = 10\ninterval = \"50ms\"\n\n[[region]]\nname = \"here\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1:1\"]\n\n[[region]]\nname = \"slow\"\ntargets = [\"{slow}\"]\n"
        ),
    );
    dir.latmap(&["sweep", "--region", "here"]).assert_ok();
    let run = read_json(&dir.join("latmap-out/run.json"));
    let p = path(&run, "here", "slow");
    assert_eq!(p["received"].as_u64(), Some(10), "{p}");
    // The raw round trip is over 30 ms; the network part on loopback is well under 5 ms.
    let p50 = p["rtt_us"]["p50"].as_u64().unwrap();
    assert!(p50 < 5_000, "dwell time not removed: p50 {p50} us");
}

#[test]
fn a_tcp_connect_whose_first_syn_was_dropped_counts_as_a_syn_retry() {
    let _t = timing_lock();
    // A listener with a full accept queue drops SYNs; 300 ms in, a thread starts
    // accepting, so the first probe's SYN, sent again after the 1 s initial RTO,
    // connects, and the later probes connect at once.
    let (listener, port, queued) = full_accept_queue();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        &format!(
            "[probe]\nkinds = [\"tcp\"]\ncount = 3\ninterval = \"1500ms\"\ntimeout = \"3s\"\n\n[[region]]\nname = \"src\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1:{port}\"]\n\n[[region]]\nname = \"slow\"\ntargets = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    dir.latmap(&["sweep", "--region", "src"]).assert_ok();
    drop(queued);
    let run = read_json(&dir.join("latmap-out/run.json"));
    let p = path(&run, "src", "slow");
    assert_eq!(
        (p["sent"].as_u64(), p["received"].as_u64()),
        (Some(3), Some(3)),
        "{p}"
    );
    let first = p["samples_us"][0].as_u64().unwrap();
    assert!(
        first >= 900_000,
        "the first connect should wait out an RTO: {p}"
    );
    assert_eq!(p["syn_retries"].as_u64(), Some(1), "{p}");
}
