//! Progress for people at a terminal: `kinitro env test`, `kinitro env build` and `kinitro run`'s
//! start-up draw indicatif bars and spinners on stderr when it is a terminal, and write plain lines
//! (or nothing, where the logs already say it) when it is not — a pipe, a file, a CI log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar or spinner on a terminal; plain lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain_messages: bool,
}

impl Progress {
    /// A bar of `total` steps labelled `label`.
    pub fn bar(total: u64, label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Self {
            bar,
            plain_messages: true,
        }
    }

    /// A spinner labelled `label`; `plain_messages` says whether [`Self::message`] writes a line when
    /// stderr is not a terminal (off where the logs already report each stage).
    pub fn spinner(label: &str, plain_messages: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
                    .expect("a valid template"),
            );
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            plain_messages,
        }
    }

    /// One more step done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// What is happening now.
    pub fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_string()),
            None if self.plain_messages => eprintln!("  {text}"),
            None => {}
        }
    }

    /// Prints a line of output (stdout) without tearing the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Removes the bar or spinner from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
