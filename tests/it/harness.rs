//! A small harness: temporary folders, running the built `latmap`, reading its files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tests whose figures depend on timing take this lock, so that they do not share the
/// two cores of a CI machine with each other.
static TIMING: Mutex<()> = Mutex::new(());

pub fn timing_lock() -> MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// Runs latmap in this folder with the given arguments.
    pub fn latmap(&self, args: &[&str]) -> Run {
        latmap_in(self.path(), args)
    }
}

/// The finished process.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(
            self.status,
            Some(0),
            "latmap failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

pub fn latmap_in(dir: &Path, args: &[&str]) -> Run {
    latmap_env(dir, &[], args)
}

/// [`latmap_in`] with extra environment variables.
pub fn latmap_env(dir: &Path, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latmap"))
        .args(args)
        .current_dir(dir)
        .env_remove("LATMAP_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start latmap");
    // Drain both pipes while waiting: a child writing more than a pipe holds would
    // otherwise block forever.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // Generous: a sweep takes seconds; a hang must still end the test.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "latmap {args:?} did not finish in 120 s; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The path `source -> target` of a run (the first, if several kinds or targets).
pub fn path<'a>(run: &'a Value, source: &str, target: &str) -> &'a Value {
    run["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .find(|p| p["source"] == source && p["target"] == target)
        .unwrap_or_else(|| panic!("no path {source} -> {target} in {run}"))
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this process may open raw ICMP sockets or datagram ICMP sockets.
pub fn can_ping() -> bool {
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    );
    let dgram = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::ICMPV4),
    );
    raw.is_ok() || dgram.is_ok()
}

/// The exact two-sided binomial interval holding at least 99% of the mass: the counts
/// `lo..=hi` such that P(X < lo) <= 0.5% and P(X > hi) <= 0.5%.
pub fn binomial_99(n: u64, p: f64) -> (u64, u64) {
    binomial_interval(n, p, 0.01)
}

/// The exact two-sided binomial interval that a count falls outside of with probability
/// at most `alpha`: P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2. A test that checks
/// k counts at once uses `alpha / k`, so that the whole test fails by chance at most
/// `alpha` of the time.
pub fn binomial_interval(n: u64, p: f64, alpha: f64) -> (u64, u64) {
    let tail = alpha / 2.0;
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    // pmf by recurrence in log space
    let ln_pmf = |k: u64| -> f64 {
        let (k, n) = (k as f64, n as f64);
        ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
            + k * p.ln()
            + (n - k) * (1.0 - p).ln()
    };
    let pmf: Vec<f64> = (0..=n).map(|k| ln_pmf(k).exp()).collect();
    let mut lo = 0;
    let mut acc = 0.0;
    for (k, m) in pmf.iter().enumerate() {
        if acc + m > tail {
            lo = k as u64;
            break;
        }
        acc += m;
    }
    let mut hi = n;
    let mut acc = 0.0;
    for (k, m) in pmf.iter().enumerate().rev() {
        if acc + m > tail {
            hi = k as u64;
            break;
        }
        acc += m;
    }
    (lo, hi)
}

/// Lanczos approximation of ln Γ(x), x > 0.
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[test]
fn binomial_interval_is_sane() {
    assert_eq!(binomial_99(100, 0.0), (0, 0));
    let (lo, hi) = binomial_99(100, 0.05);
    // P(X<=0)=0.0059 > 0.5%, so 0 is inside; P(X>=12) ~ 0.0043
    assert_eq!(lo, 0);
    assert!((11..=12).contains(&hi), "{hi}");
    let (lo, hi) = binomial_99(1000, 0.5);
    assert!(
        (458..=460).contains(&lo) && (540..=542).contains(&hi),
        "{lo} {hi}"
    );
}
