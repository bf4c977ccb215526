//! `kinitro scoring compute | demo` (docs/scoring.md §10): no database, chain or network.

use std::io::Read;

use clap::Subcommand;
use kinitro_actors::scoring::demo::{env_names, generated_rates, render};
use kinitro_actors::scoring::document::ScoringDocument;
use kinitro_actors::scoring::{score, ScoringParams};

use super::{CommandResult, Failure};

/// `kinitro scoring` commands.
#[derive(Debug, Subcommand)]
pub enum ScoringCommand {
    /// Score a JSON document (FILE, or - for stdin) and print the result as JSON
    Compute {
        /// Input document
        #[arg(long)]
        input: String,
    },
    /// Score generated success rates and print a table
    Demo {
        /// Miners, 1–256
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=256))]
        miners: u16,
        /// Environments, 1–16
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
        envs: u8,
        /// Generator seed
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Runs a scoring command; every input problem is exit status 2.
pub fn execute(cmd: ScoringCommand) -> CommandResult {
    match cmd {
        ScoringCommand::Compute { input } => {
            let mut text = String::new();
            let read = if input == "-" {
                std::io::stdin().read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(&input).map(|t| text = t)
            };
            read.map_err(|e| Failure::usage(format!("cannot read {input}: {e}")))?;
            let report = ScoringDocument::parse(&text)
                .and_then(|d| d.compute())
                .map_err(Failure::usage)?;
            println!(
                "{}",
                serde_json::to_string(&report).map_err(Failure::runtime)?
            );
            Ok(())
        }
        ScoringCommand::Demo { miners, envs, seed } => {
            let rates = generated_rates(usize::from(miners), usize::from(envs), seed);
            let names = env_names(usize::from(envs));
            let outcome =
                score(names.len(), &rates, &ScoringParams::default()).map_err(Failure::usage)?;
            print!("{}", render(&names, &rates, &outcome));
            Ok(())
        }
    }
}
