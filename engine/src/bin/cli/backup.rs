//! `sotto backup export FILE` and `sotto backup import FILE`: the encrypted backup of the
//! identity, MLS state, contacts and history (see `sotto_engine::backup`). The recovery
//! code is printed once on export and read from standard input on import, never taken as
//! an argument (arguments end up in shell history and in `ps`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use sotto_engine::backup::{self, ImportOptions, RecoveryCode};

/// `sotto backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write an encrypted backup of your identity, conversations, contacts and history to
    /// a new file, and print the recovery code that opens it (shown once: write it down).
    Export {
        /// The backup file to create (it must not exist).
        file: PathBuf,
    },
    /// Restore a backup into this data dir (which must have no identity yet, unless
    /// --force). The recovery code is read from standard input.
    Import {
        /// The backup file.
        file: PathBuf,
        /// Replace the identity and state already in the data dir.
        #[arg(long)]
        force: bool,
    },
}

/// Run one backup command.
pub fn run(command: BackupCommand, data_dir: &Path) -> anyhow::Result<()> {
    match command {
        BackupCommand::Export { file } => export(data_dir, &file),
        BackupCommand::Import { file, force } => {
            let code = read_code()?;
            let summary = backup::import_with(
                &file,
                &code,
                data_dir,
                &ImportOptions {
                    force,
                    ..Default::default()
                },
            )
            .with_context(|| format!("restoring {}", file.display()))?;
            println!("Restored into {}:", data_dir.display());
            for (name, size) in &summary.files {
                println!("  {name} ({size} bytes)");
            }
            println!(
                "The backup was made by Sotto {} at {} (Unix time).",
                summary.sotto_version, summary.created_at
            );
            Ok(())
        }
    }
}

/// Export `data_dir` to `file` and show the recovery code.
pub fn export(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    eprintln!("Encrypting the backup (the key derivation takes a moment)...");
    let code = backup::export(data_dir, file)
        .with_context(|| format!("backing up {}", data_dir.display()))?;
    show_code(file, &code);
    Ok(())
}

fn show_code(file: &Path, code: &RecoveryCode) {
    println!("Backup written to {}", file.display());
    println!();
    println!("Your recovery code (shown only now; without it the backup cannot be opened):");
    println!();
    println!("    {}", code.reveal());
    println!();
    println!("Write it down and keep it apart from the backup file. Anyone holding both can");
    println!("read your messages and act as you.");
}

fn read_code() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Recovery code: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the recovery code from standard input")?;
    let line = line.trim().to_owned();
    anyhow::ensure!(
        !line.is_empty(),
        "no recovery code on standard input (type it, or pipe it in)"
    );
    Ok(line)
}
