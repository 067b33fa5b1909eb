//! `latmap completions SHELL` and `latmap man`: shell completions and man pages,
//! generated from the clap definitions at run time (as `rg --generate` does), so a
//! package builds them with the binary it ships and they can never describe another
//! version's flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; the script is printed to stdout.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write latmap.1 and one page per subcommand (latmap-sweep.1, ...) into DIR
    /// [default: print latmap.1 to stdout].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "latmap", &mut out);
    super::print(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    // Built first, so that subcommands know their full names ("latmap sweep"); the
    // `help` subcommand is left out, as `--help` documents itself.
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    match args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            super::print(&String::from_utf8_lossy(&out))?;
        }
        Some(dir) => {
            crate::files::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let written = write_pages(cmd, &dir)?;
            eprintln!(
                "latmap: {} man pages written to {}",
                written.len(),
                super::shown(&dir)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of each of its subcommands (`latmap-sweep.1`,
/// `latmap-lab-up.1`), each atomically. Returns the files written. `cmd` is built.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), dir, written)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)?;
        let path = dir.join(man.get_filename());
        crate::artifact::write_atomic(&path, &page)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    }
    let mut written = Vec::new();
    walk(cmd, dir, &mut written)?;
    written.sort();
    Ok(written)
}
