//! Multi-host cases in network namespaces made by the test (needs root and iproute2;
//! skipped with a printed reason otherwise).

use std::process::Command;

use crate::harness::{Dir, path, read_json, timing_lock};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have_ip() -> bool {
    Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        Some("not root: network namespaces need root")
    } else if !have_ip() {
        Some("the `ip` command (iproute2) is missing")
    } else {
        None
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces that are deleted when the test ends, however it ends.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new(tag: &str, count: usize) -> Namespaces {
        let names: Vec<String> = (0..count)
            .map(|i| format!("lm{}{tag}{i}", std::process::id()))
            .collect();
        let ns = Namespaces(names);
        for n in &ns.0 {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn name(&self, i: usize) -> &str {
        &self.0[i]
    }

    fn exec(&self, i: usize, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", self.name(i)];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs latmap inside namespace `i`, in `dir`.
    fn latmap(&self, i: usize, dir: &Dir, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", self.name(i), env!("CARGO_BIN_EXE_latmap")])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run latmap in a namespace");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn icmp_uses_the_unprivileged_datagram_socket_when_allowed() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _t = timing_lock();
    let ns = Namespaces::new("dg", 1);
    // ping_group_range belongs to the namespace: allowing everyone here changes nothing
    // outside the test.
    ns.exec(
        0,
        &["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
    );
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"icmp\"]\ncount = 10\ninterval = \"5ms\"\n\n[[region]]\nname = \"a\"\nsource = \"127.0.0.1\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"b\"\ntargets = [\"127.0.0.2\"]\n",
    );
    let (status, stderr) = ns.latmap(0, &dir, &["sweep", "--region", "a"]);
    assert_eq!(status, Some(0), "{stderr}");
    let run = read_json(&dir.join("latmap-out/run.json"));
    assert_eq!(run["probers"]["a"]["sockets"]["icmp-v4"], "datagram");
    assert_eq!(path(&run, "a", "b")["received"].as_u64(), Some(10));
}

#[test]
fn icmp_errors_from_a_router_are_counted_never_as_replies() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _t = timing_lock();
    // prober (0) --veth-- router (1) --veth-- host (2). The router forwards to the host's
    // address .3 but has a "prohibit" route for its address .2, so probes to .2 get an
    // ICMP destination-unreachable from the router.
    let ns = Namespaces::new("rt", 3);
    let (p, r, h) = (
        ns.name(0).to_string(),
        ns.name(1).to_string(),
        ns.name(2).to_string(),
    );
    let veth = |a: &str, b: &str| format!("v{}{a}{b}", std::process::id() % 100_000);
    let (pa, pb, ha, hb) = (
        veth("p", "r"),
        veth("r", "p"),
        veth("r", "h"),
        veth("h", "r"),
    );
    sh(&[
        "ip", "link", "add", &pa, "netns", &p, "type", "veth", "peer", "name", &pb, "netns", &r,
    ]);
    sh(&[
        "ip", "link", "add", &ha, "netns", &r, "type", "veth", "peer", "name", &hb, "netns", &h,
    ]);
    for (n, dev, addr) in [
        (&p, &pa, "10.200.1.1/24"),
        (&r, &pb, "10.200.1.2/24"),
        (&r, &ha, "10.200.2.1/24"),
        (&h, &hb, "10.200.2.2/24"),
        (&h, &hb, "10.200.2.3/24"),
    ] {
        sh(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
        sh(&["ip", "-n", n, "link", "set", dev, "up"]);
    }
    sh(&[
        "ip",
        "-n",
        &p,
        "route",
        "add",
        "default",
        "via",
        "10.200.1.2",
    ]);
    sh(&[
        "ip",
        "-n",
        &h,
        "route",
        "add",
        "default",
        "via",
        "10.200.2.1",
    ]);
    ns.exec(1, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // No rate limit on the router's ICMP errors, so every probe gets one.
    ns.exec(1, &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    sh(&["ip", "-n", &r, "route", "add", "prohibit", "10.200.2.2/32"]);

    let dir = Dir::new();
    dir.write(
        "regions.toml",
        "[probe]\nkinds = [\"icmp\"]\ncount = 5\ninterval = \"20ms\"\ntimeout = \"500ms\"\n\n[[region]]\nname = \"prober\"\nsource = \"10.200.1.1\"\ntargets = [\"10.200.1.1\"]\n\n[[region]]\nname = \"reachable\"\ntargets = [\"10.200.2.3\"]\n\n[[region]]\nname = \"prohibited\"\ntargets = [\"10.200.2.2\"]\n",
    );
    let (status, stderr) = ns.latmap(0, &dir, &["sweep", "--region", "prober"]);
    assert_eq!(status, Some(0), "{stderr}");
    let run = read_json(&dir.join("latmap-out/run.json"));
    let ok = path(&run, "prober", "reachable");
    assert_eq!(
        (ok["received"].as_u64(), ok["icmp_errors"].as_u64()),
        (Some(5), Some(0)),
        "{ok}"
    );
    let bad = path(&run, "prober", "prohibited");
    assert_eq!(
        (
            bad["sent"].as_u64(),
            bad["received"].as_u64(),
            bad["icmp_errors"].as_u64()
        ),
        (Some(5), Some(0), Some(5)),
        "{bad}"
    );
    assert!(bad["rtt_us"].is_null());
}
