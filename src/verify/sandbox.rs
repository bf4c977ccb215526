//! One run of a committed policy in a sandbox container (verification.md §2.3): the executor never
//! imports, executes or deserialises a miner file; it streams the snapshot's regular files and the
//! samples into the container's stdin as a tar stream and reads one JSON line of actions from its
//! stdout (deploy/verifier/sandbox.py is the other side).
//!
//! The container has no network, a read-only root, a tmpfs `/tmp` (whose pages count against the
//! memory limit), a non-root user, no capabilities, `no-new-privileges`, and memory, CPU, process
//! and wall-time limits ([`SandboxLimits`]). It is always removed, also when the run is cancelled.
//! No bind mount and no archive upload is used, so this works with a remote engine and from an
//! executor that itself runs in a container.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::container::Engine;

/// Label on every sandbox container (value `sandbox`), so leftovers can be found.
pub const SANDBOX_LABEL: &str = "io.kinitro.verification";
/// The most bytes of stdout kept; a sandbox writing more is invalid.
pub const MAX_STDOUT: usize = 1 << 20;
/// The bytes of stderr kept (its tail) for error messages.
const STDERR_TAIL: usize = 4096;
/// The size of the chunks the input tar is streamed in.
const CHUNK: usize = 256 << 10;
/// How long the engine may take to report the exit state once the output has ended.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// The limits of one sandbox run (verification.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall time from the container's start to its exit (default 120 s).
    pub timeout: Duration,
    /// Memory in bytes, swap included (default 4 GiB); the tmpfs' pages count against it.
    pub memory_bytes: i64,
    /// CPU in billionths of a CPU (default 1e9: one CPU).
    pub nano_cpus: i64,
    /// Processes and threads (default 256).
    pub pids: i64,
    /// Size of the tmpfs `/tmp` the snapshot is unpacked into (default 4 GiB, the memory limit,
    /// which it shares).
    pub tmpfs_bytes: i64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            memory_bytes: 4 << 30,
            nano_cpus: 1_000_000_000,
            pids: 256,
            tmpfs_bytes: 4 << 30,
        }
    }
}

/// What one sandbox run found.
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxOutcome {
    /// The policy ran: per sample its flattened action, or `None` with the error of that sample in
    /// the second list (both as long as the samples).
    Actions(Vec<Option<Vec<f32>>>, Vec<Option<String>>),
    /// The committed revision cannot be run as a policy (no policy.py, no RobotPolicy, an
    /// exception, a limit exceeded): counts against the miner.
    Invalid(String),
    /// Our side failed (engine, image, a module missing from the image): never counts against the
    /// miner.
    Unverifiable(String),
}

/// The sandbox's result line (deploy/verifier/sandbox.py).
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum ResultLine {
    Ok {
        actions: Vec<Option<Vec<f32>>>,
        errors: Vec<Option<String>>,
    },
    Error {
        kind: String,
        error: String,
    },
}

/// Removes sandbox containers left behind by a process that died before removing its own: those
/// created longer than `older_than` ago, whatever their state (a live owner removes its sandbox
/// well within that). A younger one may belong to a live verifier on the same engine, even when
/// it is not running — just created and about to start, or exited and about to be inspected — so
/// it is left alone: removing it would kill that verifier's run. Returns how many were removed.
pub async fn remove_leftovers(engine: &Engine, older_than: Duration) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![SANDBOX_LABEL.to_string()])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = engine.docker.list_containers(Some(options)).await else {
        return 0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let mut removed = 0;
    for c in list {
        let stale = c
            .created
            .is_some_and(|t| now - t > older_than.as_secs() as i64);
        let Some(id) = c.id.filter(|_| stale) else {
            continue;
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if engine
            .docker
            .remove_container(&id, Some(options))
            .await
            .is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Runs the policy of `snapshot` (a downloaded repository folder) on `observations` in a fresh
/// sandbox container of `image` on `engine`, seeding sample i with `seeds[i]`; never fails, every
/// problem is an outcome.
pub async fn run(
    engine: &Engine,
    image: &str,
    snapshot: &Path,
    seeds: &[u64],
    observations: &[serde_json::Value],
    limits: &SandboxLimits,
) -> SandboxOutcome {
    let size = match snapshot_size(snapshot) {
        Ok(size) => size,
        Err(e) => {
            return SandboxOutcome::Unverifiable(format!(
                "cannot read the snapshot {}: {e}",
                snapshot.display()
            ))
        }
    };
    let room = limits.tmpfs_bytes.min(limits.memory_bytes);
    if size > room as u64 {
        return SandboxOutcome::Invalid(format!(
            "the snapshot ({:.2} GB) does not fit the sandbox's memory ({:.2} GB)",
            size as f64 / 1e9,
            room as f64 / 1e9
        ));
    }
    let samples = match serde_json::to_vec(&serde_json::json!({
        "seeds": seeds,
        "observations": observations,
    })) {
        Ok(bytes) => bytes,
        Err(e) => return SandboxOutcome::Unverifiable(format!("cannot encode the samples: {e}")),
    };
    let name = format!("kinitro-verify-{}", uuid::Uuid::new_v4().simple());
    let mut removal = Removal {
        docker: engine.docker.clone(),
        name: name.clone(),
        armed: false,
    };
    let outcome = run_container(
        engine,
        image,
        &name,
        snapshot,
        samples,
        seeds.len(),
        limits,
        &mut removal,
    )
    .await;
    removal.remove().await;
    outcome
}

/// Create, attach, start, feed, read, inspect; `removal` is armed once the container exists.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    engine: &Engine,
    image: &str,
    name: &str,
    snapshot: &Path,
    samples: Vec<u8>,
    count: usize,
    limits: &SandboxLimits,
    removal: &mut Removal,
) -> SandboxOutcome {
    let docker = &engine.docker;
    let body = create_body(image, limits);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await;
    let id = match created {
        Ok(c) => c.id,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        }) => {
            return SandboxOutcome::Unverifiable(format!(
                "the verifier image {image} is not on the Docker engine at {} ({message}); \
                 build it with `kinitro env build verifier`",
                engine.uri
            ))
        }
        Err(e) => {
            return SandboxOutcome::Unverifiable(format!(
                "cannot create the verification sandbox on {}: {e}",
                engine.uri
            ))
        }
    };
    removal.armed = true;
    // Attached before the start, so that no output is missed.
    let attach = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    let attached = match docker.attach_container(&id, Some(attach)).await {
        Ok(a) => a,
        Err(e) => {
            return SandboxOutcome::Unverifiable(format!(
                "cannot attach to the verification sandbox: {e}"
            ))
        }
    };
    if let Err(e) = docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
    {
        return SandboxOutcome::Unverifiable(format!("cannot start the verification sandbox: {e}"));
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;

    // The input: a tar stream made on a blocking thread, forwarded chunk by chunk. A sandbox that
    // stops reading (it failed early, or the policy is done) ends the stream; that is no error.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let folder = snapshot.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || {
        write_input(
            &folder,
            &samples,
            ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            },
        )
    });
    let mut input = attached.input;
    let feeder = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if input.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = input.flush().await;
        // End of input (the entry point does not wait for it: the tar stream ends itself).
        let _ = input.shutdown().await;
    });

    let mut output = attached.output;
    let mut collected = Collected::default();
    let read = async {
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) => collected.stdout(&message),
                Ok(LogOutput::StdErr { message }) => collected.stderr(&message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let output_ended = tokio::time::timeout_at(deadline, read).await.is_ok();
    let exited = output_ended
        && tokio::time::timeout_at(deadline + EXIT_GRACE, async {
            let mut wait = Box::pin(docker.wait_container(&id, None::<WaitContainerOptions>));
            // A nonzero exit arrives as an error; either way the container has stopped.
            let _ = wait.next().await;
        })
        .await
        .is_ok();
    feeder.abort();
    if !exited {
        let _ = docker
            .kill_container(
                &id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build(),
                ),
            )
            .await;
        // Output that ended in time without an exit is the engine's failure, not the miner's.
        return if output_ended {
            SandboxOutcome::Unverifiable(format!(
                "the engine did not report the sandbox's exit within {} s of its output's end",
                EXIT_GRACE.as_secs()
            ))
        } else {
            SandboxOutcome::Invalid(format!(
                "sandbox time limit ({} s) exceeded",
                limits.timeout.as_secs_f64()
            ))
        };
    }
    if let Ok(Err(e)) = producer.await {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return SandboxOutcome::Unverifiable(format!(
                "cannot read the snapshot {}: {e}",
                snapshot.display()
            ));
        }
    }
    let state = match docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
    {
        Ok(inspect) => inspect.state.unwrap_or_default(),
        Err(e) => {
            return SandboxOutcome::Unverifiable(format!(
                "cannot inspect the verification sandbox: {e}"
            ))
        }
    };
    interpret(
        state.exit_code,
        state.oom_killed == Some(true),
        &collected,
        count,
    )
}

/// The create request: the image's entry point with every limit and hardening of the module doc.
fn create_body(image: &str, limits: &SandboxLimits) -> ContainerCreateBody {
    let user = crate::container::image::USER_ID;
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(format!("{user}:{user}")),
        labels: Some(HashMap::from([(
            SANDBOX_LABEL.to_string(),
            "sandbox".to_string(),
        )])),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}", limits.tmpfs_bytes),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(limits.memory_bytes),
            memory_swap: Some(limits.memory_bytes),
            nano_cpus: Some(limits.nano_cpus),
            pids_limit: Some(limits.pids),
            // Each process's CPU time is bounded too, so a sandbox whose removal was missed (a
            // killed executor) cannot burn a core for ever. The bound is a backstop well past the
            // wall-time limit: it must never race that limit's own kill (delayed by a busy
            // engine), which names the time limit in the verdict.
            ulimits: Some(vec![bollard::models::ResourcesUlimits {
                name: Some("cpu".into()),
                soft: Some(cpu_backstop_s(limits.timeout)),
                hard: Some(cpu_backstop_s(limits.timeout)),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CPU seconds a sandbox process may use: twice the wall-time limit plus 30 s.
fn cpu_backstop_s(timeout: Duration) -> i64 {
    2 * timeout.as_secs() as i64 + 30
}

/// The outcome of a stopped sandbox from its exit state and output.
fn interpret(
    exit_code: Option<i64>,
    oom_killed: bool,
    collected: &Collected,
    count: usize,
) -> SandboxOutcome {
    let stderr = collected.stderr_tail();
    if collected.overflow {
        return SandboxOutcome::Invalid(format!(
            "the sandbox wrote more than {MAX_STDOUT} bytes of output"
        ));
    }
    let text = String::from_utf8_lossy(&collected.stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    if exit_code == Some(0) {
        if let Some(line) = line {
            return match serde_json::from_str::<ResultLine>(line) {
                Ok(ResultLine::Ok { actions, errors }) => {
                    if actions.len() != count || errors.len() != count {
                        SandboxOutcome::Invalid(format!(
                            "the sandbox returned {} actions for {count} samples",
                            actions.len()
                        ))
                    } else {
                        SandboxOutcome::Actions(actions, errors)
                    }
                }
                Ok(ResultLine::Error { kind, error }) => match kind.as_str() {
                    "missing_module" | "bad_input" | "internal" => {
                        SandboxOutcome::Unverifiable(error)
                    }
                    _ => SandboxOutcome::Invalid(error),
                },
                Err(e) => SandboxOutcome::Invalid(format!(
                    "the sandbox's result is malformed ({e}): {}",
                    clip(line, 300)
                )),
            };
        }
    }
    if oom_killed {
        return SandboxOutcome::Invalid("sandbox memory limit exceeded".into());
    }
    match exit_code {
        Some(0) => SandboxOutcome::Invalid(format!(
            "the sandbox ended without a result{}",
            with_stderr(&stderr)
        )),
        Some(137) => SandboxOutcome::Invalid(format!(
            "the sandbox was killed (exit status 137){}",
            with_stderr(&stderr)
        )),
        Some(code) => SandboxOutcome::Invalid(format!(
            "the sandbox exited with status {code}{}",
            with_stderr(&stderr)
        )),
        None => SandboxOutcome::Unverifiable("the engine reports no exit status".into()),
    }
}

/// `: <stderr tail>` when there is one.
fn with_stderr(tail: &str) -> String {
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// At most `max` bytes of `text` (cut at a character boundary).
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The sandbox's output as read so far.
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    overflow: bool,
    stderr: Vec<u8>,
}

impl Collected {
    fn stdout(&mut self, bytes: &[u8]) {
        if self.stdout.len() + bytes.len() > MAX_STDOUT {
            self.overflow = true;
        } else {
            self.stdout.extend_from_slice(bytes);
        }
    }

    fn stderr(&mut self, bytes: &[u8]) {
        self.stderr.extend_from_slice(bytes);
        if self.stderr.len() > 2 * STDERR_TAIL {
            let cut = self.stderr.len() - STDERR_TAIL;
            self.stderr.drain(..cut);
        }
    }

    fn stderr_tail(&self) -> String {
        let start = self.stderr.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.stderr[start..]).into_owned()
    }
}

/// Removes the container: [`Removal::remove`] on the normal path, a spawned removal when the run
/// is dropped half-way (cancelled).
struct Removal {
    docker: bollard::Docker,
    name: String,
    armed: bool,
}

impl Removal {
    async fn remove(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self
            .docker
            .remove_container(&self.name, Some(options))
            .await
        {
            tracing::warn!(container = %self.name, error = %e, "cannot remove a verification sandbox");
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let docker = self.docker.clone();
        let name = std::mem::take(&mut self.name);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&name, Some(options)).await;
            });
        }
    }
}

/// A blocking writer that hands full chunks to the async side.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the sandbox stopped reading",
            )
        })
    }
}

/// The regular files of `snapshot` (relative paths, sorted; links and anything else left out).
fn snapshot_files(snapshot: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let mut entries = std::fs::read_dir(snapshot.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type()?;
            let name = rel.join(entry.file_name());
            if kind.is_dir() {
                pending.push(name);
            } else if kind.is_file() {
                files.push((name, entry.metadata()?.len()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The total size of the snapshot's regular files.
fn snapshot_size(snapshot: &Path) -> std::io::Result<u64> {
    Ok(snapshot_files(snapshot)?.iter().map(|(_, len)| len).sum())
}

/// Writes the sandbox's input: `policy/<file>` for each regular file of `snapshot`, then
/// `samples.json`.
fn write_input(snapshot: &Path, samples: &[u8], out: impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        h
    };
    for (rel, _) in snapshot_files(snapshot)? {
        let file = std::fs::File::open(snapshot.join(&rel))?;
        // The size of the open file: a file replaced since the listing is sent as it is now.
        let size = file.metadata()?.len();
        let mut h = header(size);
        tar.append_data(&mut h, Path::new("policy").join(&rel), file)?;
    }
    let mut h = header(samples.len() as u64);
    tar.append_data(&mut h, "samples.json", samples)?;
    let mut out = tar.into_inner()?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(stdout: &str, stderr: &str) -> Collected {
        let mut c = Collected::default();
        c.stdout(stdout.as_bytes());
        c.stderr(stderr.as_bytes());
        c
    }

    #[test]
    fn results_and_exit_states_map_to_outcomes() {
        let ok = r#"{"status": "ok", "actions": [[0.5, -1.0], null], "errors": [null, "ValueError: x"]}"#;
        assert_eq!(
            interpret(Some(0), false, &collected(ok, ""), 2),
            SandboxOutcome::Actions(
                vec![Some(vec![0.5, -1.0]), None],
                vec![None, Some("ValueError: x".into())]
            )
        );
        let missing = r#"{"status": "error", "kind": "missing_module", "error": "module 'torch' is not installed"}"#;
        assert!(matches!(
            interpret(Some(0), false, &collected(missing, ""), 2),
            SandboxOutcome::Unverifiable(e) if e.contains("torch")
        ));
        let no_class = r#"{"status": "error", "kind": "no_policy_class", "error": "RobotPolicy class not found"}"#;
        assert!(matches!(
            interpret(Some(0), false, &collected(no_class, ""), 2),
            SandboxOutcome::Invalid(e) if e.contains("RobotPolicy")
        ));
        assert_eq!(
            interpret(Some(137), true, &collected("", ""), 2),
            SandboxOutcome::Invalid("sandbox memory limit exceeded".into())
        );
        assert!(matches!(
            interpret(Some(1), false, &collected("", "Traceback: boom"), 2),
            SandboxOutcome::Invalid(e) if e.contains("status 1") && e.contains("boom")
        ));
        assert!(matches!(
            interpret(Some(0), false, &collected(ok, ""), 3),
            SandboxOutcome::Invalid(_)
        ));
        // The last line wins (a miner cannot hide the real result behind an earlier one).
        let two = format!("garbage\n{ok}\n");
        assert!(matches!(
            interpret(Some(0), false, &collected(&two, ""), 2),
            SandboxOutcome::Actions(..)
        ));
    }

    #[test]
    fn output_is_bounded() {
        let mut c = Collected::default();
        c.stdout(&vec![b'x'; MAX_STDOUT + 1]);
        assert!(c.overflow);
        for _ in 0..100 {
            c.stderr(&[b'e'; 1000]);
        }
        assert!(c.stderr.len() <= 2 * STDERR_TAIL);
        assert_eq!(c.stderr_tail().len(), STDERR_TAIL);
    }

    #[test]
    fn the_input_holds_regular_files_and_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.py"), "class RobotPolicy: pass\n").unwrap();
        std::fs::create_dir(dir.path().join("weights")).unwrap();
        std::fs::write(dir.path().join("weights/w.bin"), [1u8, 2, 3]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.py")).unwrap();
        let mut bytes = Vec::new();
        write_input(dir.path(), b"{}", &mut bytes).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["policy/policy.py", "policy/weights/w.bin", "samples.json"]
        );
        assert_eq!(snapshot_size(dir.path()).unwrap(), 24 + 3);
    }
}
