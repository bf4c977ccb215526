//! `kinitro image build runtime|postgres|all` (docs/deployment.md §1): the compose stacks' images,
//! built on the local engine with no registry.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::{CommandResult, Failure};
use crate::container::image::{BuildRequest, Kind};

/// Which service image to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The kinitro runtime image (API, scheduler, executor, `kinitro run`)
    Runtime,
    /// The PostgreSQL image
    Postgres,
    /// Both
    All,
}

/// The runtime image's default tag (the compose files' `KINITRO_IMAGE` default).
pub const RUNTIME_TAG: &str = "kinitro:latest";
/// The PostgreSQL image's default tag (the compose files' `POSTGRES_IMAGE` default).
pub const POSTGRES_TAG: &str = "kinitro/postgres:latest";

/// `kinitro image` commands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the compose stacks' images on the local engine (no registry needed)
    Build {
        /// runtime, postgres or all
        #[arg(value_enum)]
        which: Which,
        /// Tag of the runtime image
        #[arg(long, default_value = RUNTIME_TAG)]
        runtime_tag: String,
        /// Tag of the PostgreSQL image
        #[arg(long, default_value = POSTGRES_TAG)]
        postgres_tag: String,
        /// The kinitro binary to put in the runtime image [default: this one]
        #[arg(long)]
        binary: Option<PathBuf>,
        /// MetaWorld scene files [default: KINITRO_METAWORLD_ASSETS_DIR]
        #[arg(long)]
        assets_dir: Option<PathBuf>,
        /// Build without the engine's layer cache
        #[arg(long)]
        no_cache: bool,
    },
}

/// Runs a `kinitro image` command.
pub fn execute(cmd: ImageCommand) -> CommandResult {
    let ImageCommand::Build {
        which,
        runtime_tag,
        postgres_tag,
        binary,
        assets_dir,
        no_cache,
    } = cmd;
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| Failure::runtime(format!("cannot find this binary: {e}")))?,
    };
    let assets = match assets_dir {
        Some(d) => std::path::absolute(&d).unwrap_or(d),
        None => crate::config::metaworld_assets_dir()?,
    };
    let mut builds = Vec::new();
    if which != Which::Runtime {
        builds.push((Kind::Postgres, postgres_tag));
    }
    if which != Which::Postgres {
        crate::sim::assets::check(&assets).map_err(Failure::runtime)?;
        builds.push((Kind::Runtime, runtime_tag));
    }
    for (kind, tag) in builds {
        let request = BuildRequest {
            kind,
            tag,
            no_cache,
            binary: binary.clone(),
            assets: assets.clone(),
            python_packages: Vec::new(),
        };
        super::env::build_image(&request, false, None)?;
    }
    Ok(())
}
