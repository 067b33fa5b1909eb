//! The record of every lab this machine runs, so that `latmap lab status | exec | down`,
//! sweeps and agents find a lab that `latmap lab up` keeps, and so that whatever a lab
//! made is removed even when its process died.
//!
//! One JSON file per lab (`ID.json`, written atomically) in `/run/latmap/labs` for root
//! (gone at reboot, like the namespaces), else `$XDG_RUNTIME_DIR/latmap/labs` or a
//! folder in the temporary directory; `LATMAP_LAB_DIR` overrides. A record names the
//! lab's owner by process id *and* start time, so a recycled process id never passes
//! for a live owner; and it lists every namespace the lab makes before it makes them,
//! so a crash half-way leaves nothing unlisted.
//!
//! Owns the records and the owner's liveness; it creates and removes nothing else.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::emulator::EmulatorStats;
use crate::config::{Config, LabMode, LabSource};

/// The schema tag of a lab record.
pub const SCHEMA: &str = "latmap.lab/1";

/// Who owns a lab, and so removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `latmap lab up`: kept for others (sweeps, agents, fping) until stopped.
    Up,
    /// A sweep's (or an agent's, or a probe's) own lab, for the length of one sweep.
    Sweep,
}

/// A lab's owning process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Its start time (clock ticks since boot, `/proc/PID/stat`), so that another
    /// process given the same id later is not taken for it.
    pub start: u64,
    pub role: Role,
}

impl Owner {
    /// This process, as the owner of a lab in `role`.
    pub fn me(role: Role) -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: process_start(pid).unwrap_or(0),
            role,
        }
    }

    /// Whether the owner still runs.
    pub fn alive(&self) -> bool {
        match process_stat(self.pid) {
            Some((state, start)) => start == self.start && !matches!(state, 'Z' | 'X' | 'x'),
            None => false,
        }
    }
}

/// Where one region of a lab is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPlace {
    pub name: String,
    /// Its network namespace (netns mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every address the region's host has.
    pub addresses: Vec<IpAddr>,
    /// Where the other regions' probers reach it: its STAMP reflector, and in netns
    /// mode its TCP listener too (ICMP goes to the same address).
    pub target: SocketAddr,
    /// The address its prober binds; `None` when the kernel chooses by route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
}

/// The core namespace of a netns lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorePlace {
    pub namespace: String,
    /// The core's own address, which every region reaches without emulated delay (an
    /// aggregator in the core listens there).
    pub address: IpAddr,
}

/// One lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub id: String,
    pub mode: LabMode,
    /// The configuration file, as an absolute path.
    pub config: PathBuf,
    /// A digest of the configuration and its matrix files when the lab started.
    pub digest: String,
    pub owner: Owner,
    pub started: DateTime<Utc>,
    /// `false` while the lab is being made.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CorePlace>,
    pub regions: Vec<RegionPlace>,
    /// Every namespace the lab makes (listed before it makes them).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The emulator's counters (netns mode), as the owner last wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<EmulatorStats>,
}

impl Record {
    /// A region's place by name.
    pub fn region(&self, name: &str) -> Option<&RegionPlace> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// Where root's labs are recorded (and so every netns lab's).
const SYSTEM_DIR: &str = "/run/latmap/labs";

/// The folder of lab records.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    /// Another folder read too: root's, for a user who is not root (who can see, not
    /// change, the labs root keeps).
    also: Option<PathBuf>,
}

impl Registry {
    /// This user's folder (created when a record is written): `LATMAP_LAB_DIR`, or
    /// `/run/latmap/labs` for root, else `$XDG_RUNTIME_DIR/latmap/labs` or a folder in
    /// the temporary directory.
    pub fn open() -> io::Result<Registry> {
        let root = nix::unistd::geteuid().is_root();
        if let Some(d) = std::env::var_os("LATMAP_LAB_DIR").filter(|d| !d.is_empty()) {
            return Ok(Registry {
                dir: PathBuf::from(d),
                also: None,
            });
        }
        let dir = if root {
            PathBuf::from(SYSTEM_DIR)
        } else {
            match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d).join("latmap/labs"),
                None => std::env::temp_dir()
                    .join(format!("latmap-{}/labs", nix::unistd::geteuid().as_raw())),
            }
        };
        Ok(Registry {
            dir,
            also: (!root).then(|| PathBuf::from(SYSTEM_DIR)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dir.as_path()).chain(self.also.as_deref())
    }

    /// Whether a record with this id exists (in this user's folder or root's).
    pub fn exists(&self, id: &str) -> bool {
        self.dirs().any(|d| d.join(format!("{id}.json")).exists())
    }

    /// Writes a record atomically, into this user's folder.
    pub fn write(&self, record: &Record) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        crate::artifact::write_json_atomic(&self.dir.join(format!("{}.json", record.id)), record)
            .map_err(io::Error::other)
    }

    /// The record `id`, if there is one (in this user's folder, else root's).
    pub fn read(&self, id: &str) -> Result<Option<Record>, String> {
        let Some(path) = self
            .dirs()
            .map(|d| d.join(format!("{id}.json")))
            .find(|p| p.exists())
        else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Removes the record `id` from this user's folder (absent is fine).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, in id order; an unreadable file is reported with its path.
    pub fn list(&self) -> Vec<Result<Record, String>> {
        let mut ids: Vec<String> = self
            .dirs()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.iter()
            .filter_map(|id| self.read(id).transpose())
            .collect()
    }

    /// The lab that `latmap lab up` keeps for this configuration file, if its owner
    /// still runs.
    pub fn find_up(&self, config: &Path) -> Option<Record> {
        let config = absolute(config);
        self.list()
            .into_iter()
            .flatten()
            .find(|r| r.owner.role == Role::Up && r.ready && r.config == config && r.owner.alive())
    }
}

fn parse(text: &str) -> Result<Record, String> {
    let record: Record = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if record.schema != SCHEMA {
        return Err(format!(
            "schema {:?} is not {SCHEMA:?} (written by another latmap version)",
            record.schema
        ));
    }
    Ok(record)
}

/// The configuration file as an absolute path (resolving links when it can), the
/// identity a lab is found by.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// A digest (FNV-1a, 64 bits, hex) of the configuration file and the matrix files it
/// names: a lab kept by `lab up` serves a sweep only if both read the same truth.
pub fn digest(config: &Config) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that moving bytes between files changes the digest.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(&std::fs::read(&config.path).unwrap_or_default());
    if let Some(LabSource::Matrix {
        rtt_file,
        loss_file,
        ..
    }) = config.lab.as_ref().map(|l| &l.source)
    {
        eat(&std::fs::read(rtt_file).unwrap_or_default());
        if let Some(loss) = loss_file {
            eat(&std::fs::read(loss).unwrap_or_default());
        }
    }
    format!("{h:016x}")
}

/// The state and start time of a process (`/proc/PID/stat`).
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// A process's start time, in clock ticks since boot.
pub fn process_start(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_id_is_not() {
        let me = Owner::me(Role::Up);
        assert!(me.start > 0);
        assert!(me.alive());
        let other = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!other.alive(), "same pid, another start time");
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(!gone.alive());
    }

    #[test]
    fn records_round_trip_and_foreign_schemas_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry {
            dir: dir.path().join("labs"),
            also: None,
        };
        let record = Record {
            schema: SCHEMA.into(),
            id: "abc123".into(),
            mode: LabMode::Netns,
            config: "/x/regions.toml".into(),
            digest: "00".into(),
            owner: Owner::me(Role::Up),
            started: Utc::now(),
            ready: true,
            core: None,
            regions: vec![RegionPlace {
                name: "a".into(),
                namespace: Some("latmap-abc123-1-a".into()),
                addresses: vec!["198.18.1.2".parse().unwrap()],
                target: "198.19.1.2:8620".parse().unwrap(),
                source: None,
            }],
            namespaces: vec!["latmap-abc123-core".into()],
            emulator: None,
        };
        registry.write(&record).expect("write");
        assert_eq!(registry.read("abc123"), Ok(Some(record.clone())));
        assert_eq!(
            registry.find_up(Path::new("/x/regions.toml")).map(|r| r.id),
            Some("abc123".into())
        );
        assert!(registry.find_up(Path::new("/y/regions.toml")).is_none());
        std::fs::write(
            dir.path().join("labs/zzz.json"),
            r#"{"schema":"latmap.lab/9"}"#,
        )
        .unwrap();
        let listed = registry.list();
        assert_eq!(listed.len(), 2);
        assert!(listed[1].as_ref().is_err_and(|e| e.contains("zzz.json")));
        registry.remove("abc123").expect("remove");
        registry.remove("abc123").expect("absent is fine");
        assert_eq!(registry.read("abc123"), Ok(None));
    }
}
