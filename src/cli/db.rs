//! `kinitro db create | init | status | reset | drop` (docs/configuration.md §3.5).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{init_logging, tokio_runtime, CommandResult, Failure};
use crate::config::{
    resolve_database_url, DatabaseUrl, Env, LogFormat, LogLevel, DEFAULT_DATABASE_URL,
};
use crate::db::{admin, connect, managed, migrate, status};

/// `kinitro db` options.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL URL [env: KINITRO_DATABASE_URL, default postgresql://postgres:postgres@localhost:5432/kinitro]
    #[arg(long, global = true, value_parser = DatabaseUrl::parse, conflicts_with = "data_dir")]
    pub database_url: Option<DatabaseUrl>,
    /// Target the managed cluster of `kinitro run --data-dir DIR` (it must be running)
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The operation.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// `kinitro db` operations.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database if missing
    Create,
    /// Apply pending migrations
    Init,
    /// Print cycles, miners, tasks, the latest and running cycles, the latest weights
    Status,
    /// Drop the project's tables and re-apply the migrations (the database is kept)
    Reset {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Drop the database
    Drop {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

/// Asks on a terminal to type the database name; without a terminal refuses (exit 2).
fn confirm(verb: &str, name: &str) -> CommandResult {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::usage(format!(
            "refusing to {verb} without --force"
        )));
    }
    print!("This will {verb} database '{name}' and destroy its data. Type the database name to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(Failure::runtime)?;
    if line.trim() == name {
        Ok(())
    } else {
        Err(Failure::runtime(format!("{verb} cancelled")))
    }
}

/// Runs one `kinitro db` command.
pub fn execute(args: DbArgs, level: Option<LogLevel>, format: Option<LogFormat>) -> CommandResult {
    init_logging(level.or(Some(LogLevel::Warn)), format, None)?;
    let url = match &args.data_dir {
        Some(dir) => managed::url_of(dir)?,
        None => resolve_database_url(
            args.database_url.clone(),
            &Env::from_process(&[]),
            Some(DEFAULT_DATABASE_URL),
        )?
        .expect("a default is given"),
    };
    let name = url.database();
    match &args.command {
        DbCommand::Reset { force: false } => confirm("reset", &name)?,
        DbCommand::Drop { force: false } => confirm("drop", &name)?,
        _ => {}
    }
    tokio_runtime()?.block_on(async move {
        match args.command {
            DbCommand::Create => println!("{}", admin::create(&url).await?),
            DbCommand::Init => {
                let applied = migrate::run_pending(&url).await?;
                println!(
                    "applied {applied} migration(s); schema is up to date ({} in total)",
                    migrate::embedded_count()
                );
            }
            DbCommand::Status => {
                let mut conn = connect(&url).await?;
                println!("database: {} at {}", name, url.target());
                println!("{}", status::read(&mut conn).await?);
            }
            DbCommand::Reset { .. } => {
                let applied = admin::reset(&url).await?;
                println!(
                    "reset {name}: dropped the kinitro tables and applied {applied} migration(s)"
                );
            }
            DbCommand::Drop { .. } => println!("{}", admin::drop_database(&url).await?),
        }
        Ok(())
    })
}
