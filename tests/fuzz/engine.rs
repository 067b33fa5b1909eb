//! A small mutation fuzzer for the stable toolchain: inputs are made from a corpus of
//! seeds by byte-level and structure-aware mutations, run through a target, and every
//! panic (and every input that runs longer than [`HANG`]) is a failure, saved to
//! `target/fuzz/TARGET/` for a regression file. Inputs whose outcome is new (the
//! target's short "signature" of what happened) join the pool that later inputs are
//! made from, so the search spreads over the outcomes a target has, a stand-in for
//! coverage feedback.
//!
//! Deterministic for a given seed; `LATMAP_FUZZ_SEED` sets it, `LATMAP_FUZZ_SECONDS`
//! turns the short run of `cargo test` into a long one (see docs/fuzzing.md).

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// An input running longer than this is a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// Inputs larger than this are cut (the parsers' own limits are tested apart).
const MAX_INPUT: usize = 1 << 20;

/// What the mutations know of the input's format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grammar {
    Json,
    Text,
    Bytes,
}

/// A parser of outside input to fuzz.
pub struct Target {
    /// Also the name of its folders under `tests/fuzz/corpus/` and `regressions/`.
    pub name: &'static str,
    pub grammar: Grammar,
    /// Runs one input. A panic is a failure; the returned signature (a few words on
    /// what happened, without numbers) tells outcomes apart.
    pub run: fn(&[u8]) -> String,
    /// How many inputs the short run of `cargo test` tries.
    pub short: u64,
}

/// What a run found.
pub struct Report {
    pub inputs: u64,
    pub outcomes: usize,
    pub elapsed: Duration,
    pub failures: Vec<PathBuf>,
}

fn dir(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(target)
}

fn read_all(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn seed_of(name: &str) -> u64 {
    if let Some(s) = std::env::var("LATMAP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    // FNV-1a of the name: each target its own fixed sequence.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `target`: first every regression file and seed, then mutated inputs, for the
/// short count or `LATMAP_FUZZ_SECONDS`.
pub fn fuzz(target: &Target) -> Report {
    let seed = seed_of(target.name);
    let budget = std::env::var("LATMAP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = read_all(&dir("corpus", target.name));
    assert!(
        !seeds.is_empty(),
        "no seeds in tests/fuzz/corpus/{}",
        target.name
    );
    let regressions = read_all(&dir("regressions", target.name));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(target.name);
    let _ = std::fs::create_dir_all(&out);

    // A watchdog: an input running past HANG is saved and the process stopped.
    let running = Arc::new(AtomicU64::new(0));
    let current: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let watchdog = {
        let (running, current, done, out) =
            (running.clone(), current.clone(), done.clone(), out.clone());
        let name = target.name;
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let since = running.load(Ordering::Relaxed);
                if since > 0 {
                    let ran = start.elapsed().saturating_sub(Duration::from_millis(since));
                    if ran > HANG {
                        let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                        let path = out.join(format!("hang-{:016x}", hash(&input)));
                        let _ = std::fs::write(&path, &input);
                        eprintln!(
                            "fuzz {name}: an input ran for more than {HANG:?}: saved as {}",
                            path.display()
                        );
                        std::process::abort();
                    }
                }
            }
        })
    };

    let mut outcomes: HashSet<String> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut failures = Vec::new();
    let mut inputs = 0u64;
    let mut run_one =
        |input: &[u8], outcomes: &mut HashSet<String>, failures: &mut Vec<PathBuf>| -> bool {
            if let Ok(mut c) = current.lock() {
                c.clear();
                c.extend_from_slice(input);
            }
            running.store(start.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
            let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
            running.store(0, Ordering::Relaxed);
            inputs += 1;
            match result {
                Ok(sig) => outcomes.insert(sig),
                Err(_) => {
                    let path = out.join(format!("crash-{:016x}", hash(input)));
                    let _ = std::fs::write(&path, input);
                    failures.push(path);
                    false
                }
            }
        };
    for input in regressions.iter().chain(&seeds) {
        run_one(input, &mut outcomes, &mut failures);
    }
    let started = Instant::now();
    let more = |n: u64| match budget {
        Some(b) => started.elapsed() < b,
        None => n < target.short,
    };
    let mut k = 0u64;
    while more(k) {
        k += 1;
        let base = pool[rng.random_range(0..pool.len())].clone();
        let other = &pool[rng.random_range(0..pool.len())];
        let input = mutate(&mut rng, base, other, target.grammar);
        if run_one(&input, &mut outcomes, &mut failures) && pool.len() < 4096 {
            pool.push(input);
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    Report {
        inputs,
        outcomes: outcomes.len(),
        elapsed: start.elapsed(),
        failures,
    }
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Numbers that break naive arithmetic.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "0.5",
    "-3.5",
    "1e300",
    "-1e300",
    "1e308",
    "1e309",
    "-1e309",
    "1e-320",
    "5e-324",
    "3.4e38",
    "0.000001",
    "100",
    "1000000000000",
    "NaN",
    "inf",
    "-inf",
    "1.0e",
    "0x10",
    "01",
    "1_000",
];

/// Strings that break naive text handling.
const STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "-",
    ".",
    "..",
    "../../etc/passwd",
    "a/b",
    "a\\b",
    "a|b",
    "a,b",
    "a\"b",
    "\u{1b}[2J",
    "\u{1b}]0;x\u{7}",
    "\r",
    "\n",
    "\t",
    "\u{0}",
    "\u{7f}",
    "\u{9b}",
    "\u{202e}",
    "\u{feff}",
    "é",
    "日本",
    "🦀",
    "<img src=x onerror=alert(1)>",
    "`x`",
    "# h",
    "*",
    "[l](u)",
    "latmap.run/1",
    "latmap.report/1",
    "latmap.push/1",
    "latmap.run/2",
    "udp",
    "tcp",
    "icmp",
    "127.0.0.1",
    "127.0.0.1:862",
    "[::1]:862",
    "::1",
    "localhost",
    "eu-west-1",
    "a",
    "b",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "+10000-01-01T00:00:00Z",
    "2026-11-26T05:00:00Z",
    "30s",
    "0s",
    "1ms",
    "100000000000000d",
    "*/5 * * * *",
];

fn mutate(rng: &mut StdRng, mut input: Vec<u8>, other: &[u8], grammar: Grammar) -> Vec<u8> {
    let rounds = 1 + rng.random_range(0..4);
    for _ in 0..rounds {
        if grammar == Grammar::Json
            && rng.random_range(0..2) == 0
            && let Some(v) = mutate_json(rng, &input)
        {
            input = v;
            continue;
        }
        if grammar != Grammar::Bytes && rng.random_range(0..3) == 0 {
            input = mutate_token(rng, &input);
            continue;
        }
        mutate_bytes(rng, &mut input, other);
    }
    input.truncate(MAX_INPUT);
    input
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

fn mutate_bytes(rng: &mut StdRng, input: &mut Vec<u8>, other: &[u8]) {
    let n = input.len();
    let at = if n == 0 { 0 } else { rng.random_range(0..n) };
    match rng.random_range(0..9) {
        0 if n > 0 => input[at] ^= 1 << rng.random_range(0..8),
        1 if n > 0 => {
            input[at] = *[
                0u8, 0xff, b'"', b'\\', b'{', b'[', b',', b'\n', 0x1b, 0x80, b'=', b']',
            ]
            .get(rng.random_range(0..12))
            .unwrap_or(&0)
        }
        2 => {
            let len = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        3 if n > 0 => {
            let end = (at + rng.random_range(1..64)).min(n);
            input.drain(at..end);
        }
        4 if n > 0 => {
            let end = (at + rng.random_range(1..256)).min(n);
            let chunk = input[at..end].to_vec();
            let times = if rng.random_range(0..8) == 0 { 200 } else { 2 };
            for _ in 0..times {
                input.splice(at..at, chunk.iter().copied());
            }
        }
        5 if !other.is_empty() => {
            let from = rng.random_range(0..other.len());
            let end = (from + rng.random_range(1..512)).min(other.len());
            input.splice(at..at, other[from..end].iter().copied());
        }
        6 => input.truncate(at),
        7 => {
            // Deep nesting: recursion limits.
            let open = *[b'[', b'{'].get(rng.random_range(0..2)).unwrap_or(&b'[');
            let depth = rng.random_range(50..5000);
            input.splice(at..at, std::iter::repeat_n(open, depth));
        }
        _ => {
            let s = pick(rng, STRINGS).as_bytes().to_vec();
            input.splice(at..at, s);
        }
    }
}

/// Replaces a number or a quoted string of the text with an interesting one.
fn mutate_token(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input).into_owned();
    let numbers: Vec<(usize, usize)> = tokens(&text, |c| {
        c.is_ascii_digit() || c == '-' || c == '.' || c == 'e'
    });
    let quoted: Vec<(usize, usize)> = quoted_spans(&text);
    let use_numbers = !numbers.is_empty() && (quoted.is_empty() || rng.random_range(0..2) == 0);
    let (spans, list) = if use_numbers {
        (numbers, NUMBERS)
    } else {
        (quoted, STRINGS)
    };
    if spans.is_empty() {
        return input.to_vec();
    }
    let (a, b) = spans[rng.random_range(0..spans.len())];
    let mut replacement = pick(rng, list).to_string();
    if !use_numbers {
        replacement = serde_json::to_string(&replacement).unwrap_or_default();
        replacement = replacement[1..replacement.len() - 1].to_string();
    }
    let mut out = text[..a].to_string();
    out.push_str(&replacement);
    out.push_str(&text[b..]);
    out.into_bytes()
}

fn tokens(text: &str, part: impl Fn(char) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (start, part(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// The insides of `"..."` spans.
fn quoted_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (open, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(s), '"') => {
                out.push((s, i));
                open = None;
            }
            (None, '"') => open = Some(i + 1),
            _ => {}
        }
    }
    out
}

/// A structure-aware mutation of a JSON document: one node replaced, removed,
/// duplicated or retyped.
fn mutate_json(rng: &mut StdRng, input: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(input).ok()?;
    let mut count = 0usize;
    count_nodes(&v, &mut count);
    let target = rng.random_range(0..count.max(1));
    let mut seen = 0usize;
    edit(&mut v, target, &mut seen, rng);
    serde_json::to_vec(&v).ok()
}

fn count_nodes(v: &serde_json::Value, n: &mut usize) {
    *n += 1;
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        serde_json::Value::Object(o) => o.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

fn edit(v: &mut serde_json::Value, target: usize, seen: &mut usize, rng: &mut StdRng) -> bool {
    use serde_json::Value;
    if *seen == target {
        *v = match rng.random_range(0..8) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => pick(rng, NUMBERS)
                .parse::<serde_json::Number>()
                .map(Value::Number)
                .unwrap_or(Value::Null),
            3 => Value::String(pick(rng, STRINGS).to_string()),
            4 => Value::Array(vec![v.clone(), v.clone()]),
            5 => match v {
                Value::Array(a) if !a.is_empty() => {
                    let i = rng.random_range(0..a.len());
                    let x = a[i].clone();
                    a.push(x);
                    return true;
                }
                Value::Object(o) if !o.is_empty() => {
                    let keys: Vec<String> = o.keys().cloned().collect();
                    o.remove(&keys[rng.random_range(0..keys.len())]);
                    return true;
                }
                _ => Value::Object(Default::default()),
            },
            6 => Value::Number(serde_json::Number::from(
                rng.random::<u64>() >> rng.random_range(0..64),
            )),
            _ => match &*v {
                Value::Number(n) => n
                    .as_f64()
                    .and_then(|f| serde_json::Number::from_f64(-f * 1.000001 - 1.0))
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Value::String(s) => Value::String(s.repeat(rng.random_range(2..40))),
                other => other.clone(),
            },
        };
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| edit(x, target, seen, rng)),
        Value::Object(o) => o.values_mut().any(|x| edit(x, target, seen, rng)),
        _ => false,
    }
}
