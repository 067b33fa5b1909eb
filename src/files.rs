//! How latmap touches the file system, in one place: what it reads must be a regular
//! file (a FIFO or a device given as an argument would block or never end), what it
//! creates gets private permissions, and the temporary files an interrupted atomic
//! write leaves are recognised and removed.
//!
//! Plain `std::fs` underneath, and `tempfile` for the temporary files of atomic
//! writes; no knowledge of what the files hold.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Permissions of every file latmap creates (before the umask): the owner reads and
/// writes, the owner's group reads, others nothing.
pub const FILE_MODE: u32 = 0o640;

/// Permissions of every folder latmap creates (before the umask).
pub const DIR_MODE: u32 = 0o750;

/// Opens `path` for reading, refusing anything but a regular file without blocking
/// on it: a FIFO is opened without waiting for a writer, then refused.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {what}; pass a regular file", path.display()),
        ));
    }
    // Reads of a regular file never block; clear the flag all the same so the
    // handle behaves as usual.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(file)
}

/// The whole content of the regular file `path`, refused (`InvalidData`) past `max`
/// bytes without reading more than that, whatever size the file claims (a sparse
/// file, `/proc`).
pub fn read_regular_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {} MiB", max >> 20),
        ));
    }
    Ok(bytes)
}

/// The whole content of the regular file `path`.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates `dir` and its missing parents with [`DIR_MODE`].
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Creates (or truncates) `path` for writing with [`FILE_MODE`].
pub fn create(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// The name of the temporary file an atomic write of `name` by process `pid` uses
/// when one process writes one at a time (links and the like); files get a unique
/// name from [`temp_file`].
pub fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.tmp-{pid}")
}

/// A new temporary file in `dir` for an atomic write of `dir/name`, created with
/// [`FILE_MODE`] and a unique name (`.NAME.tmp-PID.RANDOM`), so that concurrent
/// writes never share one and [`remove_stale_temps`] knows whose it is. It is
/// deleted when dropped unless persisted.
pub fn temp_file(dir: &Path, name: &str) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let prefix = format!("{}.", temp_name(name, std::process::id()));
    tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(8)
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
}

/// Writes `path` atomically: `fill` writes a [`temp_file`] beside it, which is synced
/// and renamed over `path`, and the folder is synced. On failure the temporary file
/// is removed and `path` is left as it was; after a crash, only a temporary file can
/// be left, which [`remove_stale_temps`] removes. Creates the missing folders.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = temp_file(dir, &name)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The process that wrote a temporary file named by [`temp_name`] or [`temp_file`],
/// if `name` is one.
pub fn temp_owner(name: &str) -> Option<u32> {
    let (_, owner) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let pid = owner.split_once('.').map_or(owner, |(pid, _)| pid);
    pid.parse().ok()
}

/// Removes the temporary files (and links) in `dir` that interrupted atomic writes
/// left: those of processes no longer running (a live process may be writing one
/// now). Returns the names removed. A folder that does not exist has none.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) && !entry.file_type()?.is_dir() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether a process with this id runs (on this machine, in this PID namespace).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert_eq!(read_regular(&file).unwrap(), b"x");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Returns at once instead of waiting for a writer.
        let e = read_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        assert!(read_regular(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn created_files_and_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        let f = sub.join("f");
        create(&f).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The umask may take more away, never add.
        assert_eq!(mode(&sub) & !DIR_MODE, 0);
        assert_eq!(mode(&f) & !FILE_MODE, 0);
        assert_eq!(mode(&f) & 0o007, 0);
    }

    #[test]
    fn stale_temporary_files_are_recognised() {
        assert_eq!(temp_owner(&temp_name("run.json", 42)), Some(42));
        assert_eq!(temp_owner("run.json"), None);
        assert_eq!(temp_owner(".run.json.tmp-x"), None);
        assert_eq!(temp_owner(".run.json.tmp-42.a1B2c3D4"), Some(42));
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot run: above the kernel's limit (4194304).
        let dead = dir.path().join(temp_name("run.json", 4_194_305));
        let mine = dir.path().join(temp_name("run.json", std::process::id()));
        fs::write(&dead, "half").unwrap();
        fs::write(&mine, "being written").unwrap();
        let removed = remove_stale_temps(dir.path()).unwrap();
        assert_eq!(removed, [temp_name("run.json", 4_194_305)]);
        assert!(!dead.exists() && mine.exists());
        assert!(
            remove_stale_temps(&dir.path().join("absent"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn atomic_writes_replace_whole_files_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/run.json");
        write_atomic(&path, |f| std::io::Write::write_all(f, b"first")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !FILE_MODE, 0, "{mode:o}");
        // A write that fails half-way leaves the old file and no temporary file.
        let e = write_atomic(&path, |f| {
            std::io::Write::write_all(f, b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&dir.path().join("sub")), ["run.json"]);
        write_atomic(&path, |f| std::io::Write::write_all(f, b"second")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names(&dir.path().join("sub")), ["run.json"]);
    }

    /// A writer that dies before its rename (here: aborts inside `fill`, so no
    /// destructor runs, as under SIGKILL) leaves its temporary file and never a half
    /// file under the final name; the next start removes the temporary file.
    #[test]
    fn a_crash_before_the_rename_leaves_no_half_file() {
        const CHILD: &str = "LATMAP_TEST_CRASH_IN";
        if let Some(dir) = std::env::var_os(CHILD) {
            let _ = write_atomic(&Path::new(&dir).join("run.json"), |f| {
                std::io::Write::write_all(f, b"{\"half")?;
                f.sync_all()?;
                std::process::abort()
            });
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        fs::write(&path, "old and whole").unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "files::tests::a_crash_before_the_rename_leaves_no_half_file",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the writer did not die");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old and whole");
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "run.json")
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(".run.json.tmp-"), "{left:?}");
        assert_eq!(fs::read(dir.path().join(&left[0])).unwrap(), b"{\"half");
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), left);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
