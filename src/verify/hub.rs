//! The HuggingFace Hub client of verification (docs/verification.md §2.1–2.2): the size check on
//! the Hub's listing of a (repo, revision), then the snapshot of that revision downloaded into a
//! bounded cache.
//!
//! Everything the Hub answers is untrusted (the repository is the miner's, and the Hub or anything
//! it redirects to may be hostile), so this client:
//! - fails closed on the listing: a file without a size, a name that is absolute, holds `..`, `.`,
//!   a backslash, a control character or an empty segment, a duplicate, or a name that is both a
//!   file and a folder makes the answer unusable;
//! - enforces the limits while downloading, not from the listing: a file's body may not exceed its
//!   listed size, nor the total the repository limit; files are written under a temporary folder
//!   renamed into place when complete; no symlink is ever made;
//! - follows redirects by hand (awc's own following is off): at most [`MAX_REDIRECTS`], only to
//!   `http(s)` URLs, never from an `https` endpoint to `http`, never in a loop, and only to hosts
//!   whose every address is public ([`crate::executor::guard::public`]; with
//!   [`HubConfig::allow_private`], loopback too and nothing else). Names are resolved by the
//!   connector itself, which checks what it resolved, so it connects only to addresses it has
//!   checked; IP literals (which the connector does not resolve) are checked before the request;
//! - bounds time: [`REQUEST_TIMEOUT`] for connecting and the answer's head, [`READ_TIMEOUT`]
//!   between two pieces of a body, [`LISTING_TIMEOUT`] for [`model_files`] and
//!   [`SNAPSHOT_TIMEOUT`] for all of [`snapshot`].
//!
//! Why not the `hf-hub` crate (spec §2.2 asks for a maintained client if one fits): read in its
//! source, hf-hub 0.4's async API is built on reqwest (the blocking one on ureq) and its 1.x line on
//! reqwest 0.13 and hf-xet. Its 0.4 download asks the file's metadata with a client that follows
//! relative redirects itself, then follows the absolute `Location` with a plain reqwest client
//! (reqwest's default policy: up to 10 redirects, nothing keeping https on https), takes the file
//! size from the server's own `Content-Range`, writes whatever each range request returns, and
//! builds its cache from symlinks (`blobs/` and `snapshots/`). Its `ApiBuilder` takes an endpoint, token and cache
//! folder but no client, resolver or redirect policy, so the address guard, the https-only rule, the
//! listing-based byte caps and the no-symlink layout cannot be applied through it. It would also
//! bring a second HTTP stack beside awc. This module is the part of it that verification needs:
//! one listing request and one GET per file.
//!
//! The futures here are not `Send` (awc's client is not): run them on an actix arbiter or under an
//! `actix_rt::System`, as the rest of the executor's HTTP calls are.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use awc::http::{header, StatusCode};
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use url::{Host, Url};

use crate::executor::guard::{admitted, GuardedResolver};

/// The Hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The most files a repository may list.
pub const DEFAULT_MAX_FILES: usize = 10_000;
/// Bytes in one "GB" of the size settings and messages (binary, 2^30, as upstream divides by
/// `1024 ** 3`).
pub const BYTES_PER_GB: f64 = 1_073_741_824.0;
/// The most redirects one download follows.
pub const MAX_REDIRECTS: usize = 3;
/// Connecting and receiving an answer's head, per request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for the next piece of a body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// All of [`model_files`].
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(120);
/// All of [`snapshot`]: listing and every download.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest listing answer read.
const LISTING_LIMIT: usize = 8 << 20;
/// A temporary download folder this old belongs to no running download (they end within
/// [`SNAPSHOT_TIMEOUT`]) and is removed by the cache trim.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);
/// Longest file name accepted from a listing, and longest segment of one.
const MAX_NAME_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;
/// Longest owner or name of a repository, and longest revision.
const MAX_REPO_PART: usize = 96;
const MAX_REVISION: usize = 64;
/// Prefix of a temporary download folder and of a completion marker, beside the snapshots of a
/// repository in the cache (snapshot folders never start with `.`: revisions may not).
const PARTIAL_PREFIX: &str = ".partial-";
const MARKER_PREFIX: &str = ".complete-";

const SIZE_FAILED: &str = "Cannot verify repository size";
const DOWNLOAD_FAILED: &str = "Cannot download repository";

/// Characters percent-encoded in a path segment of a download URL: all but RFC 3986's unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where the Hub is and the limits a repository is held to.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL of the Hub (`HF_ENDPOINT`, default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// Bearer token sent to the Hub itself, never to hosts it redirects to (`HF_TOKEN`).
    pub token: Option<String>,
    /// Admit loopback addresses for the Hub and its redirects, nothing else
    /// (`KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB`, tests only).
    pub allow_private: bool,
    /// Most bytes a repository may hold, by listing and by download.
    pub max_repo_bytes: u64,
    /// Most files a repository may list.
    pub max_files: usize,
    /// The snapshot cache (`KINITRO_EXECUTOR_VERIFICATION_CACHE_DIR`).
    pub cache_dir: PathBuf,
    /// Size the cache is trimmed to after a download, least recently used snapshots first.
    pub cache_max_bytes: u64,
}

impl HubConfig {
    /// The defaults of docs/verification.md with the cache at `cache_dir`: the public Hub, no
    /// token, 5 GB per repository, [`DEFAULT_MAX_FILES`] files, a 20 GB cache.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            allow_private: false,
            max_repo_bytes: gb_to_bytes(5.0),
            max_files: DEFAULT_MAX_FILES,
            cache_dir,
            cache_max_bytes: gb_to_bytes(20.0),
        }
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("allow_private", &self.allow_private)
            .field("max_repo_bytes", &self.max_repo_bytes)
            .field("max_files", &self.max_files)
            .field("cache_dir", &self.cache_dir)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .finish()
    }
}

/// Bytes in `gb` GB ([`BYTES_PER_GB`]); negative or NaN is 0.
pub fn gb_to_bytes(gb: f64) -> u64 {
    (gb * BYTES_PER_GB) as u64
}

/// Why a repository could not be listed or fetched. The message is the verification's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The committed revision cannot be a policy (counts against the miner): too large, too many
    /// files, a body larger than its listing, no `policy.py`, a malformed repository name.
    #[error("{0}")]
    Invalid(String),
    /// The Hub or this side failed (never counts against the miner): unreachable, erroring,
    /// missing information, a hostile answer, a local error.
    #[error("{0}")]
    Unverifiable(String),
}

impl HubError {
    fn size(reason: impl fmt::Display) -> Self {
        Self::Unverifiable(format!("{SIZE_FAILED}: {reason}"))
    }

    fn download(reason: impl fmt::Display) -> Self {
        Self::Unverifiable(format!("{DOWNLOAD_FAILED}: {reason}"))
    }
}

/// One file of a repository's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Path inside the repository, `/`-separated, checked to stay inside it.
    pub path: String,
    /// Size in bytes the listing gives (the larger of `size` and `lfs.size` when both are given).
    pub size: u64,
}

/// Checks a repository name: `owner/name`, each 1–96 of `[A-Za-z0-9._-]`, not starting with `.`
/// or `-`.
pub fn validate_repo(repo: &str) -> Result<(), HubError> {
    let ok = repo
        .split_once('/')
        .is_some_and(|(owner, name)| part_ok(owner, MAX_REPO_PART) && part_ok(name, MAX_REPO_PART));
    if ok {
        Ok(())
    } else {
        Err(HubError::Invalid(format!(
            "Invalid repository name {repo:?} (expected owner/name)"
        )))
    }
}

/// Checks a revision: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_revision(revision: &str) -> Result<(), HubError> {
    if part_ok(revision, MAX_REVISION) {
        Ok(())
    } else {
        Err(HubError::Invalid(format!("Invalid revision {revision:?}")))
    }
}

fn part_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a revision names one commit (40 hexadecimal digits): only those snapshots are reused
/// from the cache, since a branch or tag may have moved since.
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The listed files of `repo` at `revision` (`GET {endpoint}/api/models/{repo}/revision/{revision}
/// ?blobs=true`), held to the configured limits: more than [`HubConfig::max_files`] files, a total
/// above [`HubConfig::max_repo_bytes`] or no `policy.py` is [`HubError::Invalid`]; no answer, an
/// error, a file without a size or a hostile name is [`HubError::Unverifiable`]
/// (`Cannot verify repository size: <reason>`). Not `Send` (see the module docs).
pub async fn model_files(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
) -> Result<Vec<RepoFile>, HubError> {
    validate_repo(repo)?;
    validate_revision(revision)?;
    let hub = Hub::new(cfg).map_err(HubError::size)?;
    hub.listing(repo, revision, Instant::now() + LISTING_TIMEOUT)
        .await
}

/// The snapshot of `repo` at `revision` in the cache, `cache_dir/<repo with / → _>/<revision[:12]>`,
/// downloaded after [`model_files`]' checks unless a complete one is there already (reused only
/// for a full commit id; its use is recorded for the least-recently-used trim). Each file's body
/// is capped at its listed size and the total at the repository limit while downloading
/// ([`HubError::Invalid`] beyond); the files are written under a temporary folder renamed into
/// place when all are complete. Afterwards the cache is trimmed to
/// [`HubConfig::cache_max_bytes`], never removing this snapshot. Not `Send` (see the module docs).
pub async fn snapshot(cfg: &HubConfig, repo: &str, revision: &str) -> Result<PathBuf, HubError> {
    validate_repo(repo)?;
    validate_revision(revision)?;
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    let paths = CachePaths::new(&cfg.cache_dir, repo, revision);
    let (p, (max_bytes, max_files)) = (paths.clone(), (cfg.max_repo_bytes, cfg.max_files));
    let (r, v) = (repo.to_string(), revision.to_string());
    if let Some(dir) = blocking(move || Ok(reuse(&p, &r, &v, max_bytes, max_files)))
        .await
        .ok()
        .flatten()
    {
        return Ok(dir);
    }

    let hub = Hub::new(cfg).map_err(HubError::size)?;
    let files = hub
        .listing(
            repo,
            revision,
            deadline.min(Instant::now() + LISTING_TIMEOUT),
        )
        .await?;

    let partial = PartialDir::create(&paths)
        .await
        .map_err(|e| HubError::download(format!("cannot create a cache folder: {e}")))?;
    let mut total = 0u64;
    for file in &files {
        hub.download(repo, revision, file, partial.path(), &mut total, deadline)
            .await?;
    }
    let marker = Marker {
        repo: repo.to_string(),
        revision: revision.to_string(),
        bytes: total,
        files: files.len(),
    };
    let (p, from) = (paths.clone(), partial.path().to_path_buf());
    blocking(move || install(&p, &from, &marker))
        .await
        .map_err(|e| HubError::download(format!("cannot install the snapshot: {e}")))?;
    partial.disarm();

    let (root, keep, max) = (
        cfg.cache_dir.clone(),
        paths.dir.clone(),
        cfg.cache_max_bytes,
    );
    if let Err(e) = blocking(move || trim(&root, max, &keep)).await {
        tracing::warn!(error = %e, "verification cache trim failed");
    }
    Ok(paths.dir)
}

/// Runs blocking file work off the arbiter's thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Parses a listing answer and holds it to the limits (see [`model_files`]).
fn parse_listing(body: &[u8], max_files: usize, max_bytes: u64) -> Result<Vec<RepoFile>, HubError> {
    #[derive(Deserialize)]
    struct Info {
        siblings: Option<Vec<Sibling>>,
    }
    #[derive(Deserialize)]
    struct Sibling {
        rfilename: String,
        size: Option<u64>,
        lfs: Option<Lfs>,
    }
    #[derive(Deserialize)]
    struct Lfs {
        size: Option<u64>,
    }

    let info: Info = serde_json::from_slice(body)
        .map_err(|e| HubError::size(format!("malformed model info: {e}")))?;
    let siblings = info
        .siblings
        .ok_or_else(|| HubError::size("the model info lists no files"))?;
    if siblings.len() > max_files {
        return Err(HubError::Invalid(format!(
            "Repository has {} files, more than the maximum allowed ({max_files})",
            siblings.len()
        )));
    }
    let mut names = HashSet::new();
    let mut folders = HashSet::new();
    let mut files = Vec::with_capacity(siblings.len());
    let mut total = 0u64;
    for s in siblings {
        if let Some(why) = refused_name(&s.rfilename) {
            return Err(HubError::size(format!(
                "refused file name {:?} ({why})",
                s.rfilename
            )));
        }
        if !names.insert(s.rfilename.clone()) {
            return Err(HubError::size(format!(
                "file {:?} is listed twice",
                s.rfilename
            )));
        }
        let mut at = 0;
        while let Some(i) = s.rfilename[at..].find('/') {
            folders.insert(s.rfilename[..at + i].to_string());
            at += i + 1;
        }
        let size = match (s.size, s.lfs.and_then(|l| l.size)) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                return Err(HubError::size(format!(
                    "no size given for {:?}",
                    s.rfilename
                )))
            }
        };
        total = total.saturating_add(size);
        files.push(RepoFile {
            path: s.rfilename,
            size,
        });
    }
    if let Some(both) = names.intersection(&folders).next() {
        return Err(HubError::size(format!(
            "{both:?} is listed both as a file and as a folder"
        )));
    }
    if total > max_bytes {
        return Err(HubError::Invalid(too_large(total, max_bytes)));
    }
    if !names.contains("policy.py") {
        return Err(HubError::Invalid(
            "No policy.py in the repository".to_string(),
        ));
    }
    Ok(files)
}

fn too_large(bytes: u64, max: u64) -> String {
    format!(
        "Repository size ({:.2} GB) exceeds maximum allowed ({:.2} GB)",
        bytes as f64 / BYTES_PER_GB,
        max as f64 / BYTES_PER_GB
    )
}

/// Why a listed file name is refused, if it is.
fn refused_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("too long");
    }
    if name.starts_with('/') {
        return Some("absolute path");
    }
    if name.contains('\\') {
        return Some("backslash");
    }
    if name.chars().any(char::is_control) {
        return Some("control character");
    }
    for segment in name.split('/') {
        match segment {
            "" => return Some("empty path segment"),
            "." | ".." => return Some("path traversal"),
            s if s.len() > MAX_SEGMENT_BYTES => return Some("path segment too long"),
            _ => {}
        }
    }
    None
}

/// Whether a redirect from a Hub at `endpoint_scheme` may go to `target`: `http(s)` only, and
/// `https` stays `https`.
fn redirect_rule(endpoint_scheme: &str, target: &Url) -> Result<(), String> {
    match target.scheme() {
        "http" | "https" => {}
        other => return Err(format!("redirect to a {other}: URL refused")),
    }
    if endpoint_scheme == "https" && target.scheme() != "https" {
        return Err(format!("redirect from https to http refused ({target})"));
    }
    Ok(())
}

/// One verification's connection to the Hub.
struct Hub<'a> {
    cfg: &'a HubConfig,
    endpoint: Url,
    client: awc::Client,
}

impl<'a> Hub<'a> {
    fn new(cfg: &'a HubConfig) -> Result<Self, String> {
        let endpoint = Url::parse(cfg.endpoint.trim_end_matches('/'))
            .map_err(|e| format!("bad Hub endpoint {:?}: {e}", cfg.endpoint))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(format!("bad Hub endpoint {:?}", cfg.endpoint));
        }
        let resolver = actix_tls::connect::Resolver::custom(GuardedResolver {
            allow_loopback: cfg.allow_private,
        });
        let connector = awc::Connector::new()
            .connector(actix_tls::connect::Connector::new(resolver).service())
            .timeout(REQUEST_TIMEOUT)
            .handshake_timeout(REQUEST_TIMEOUT);
        let client = awc::Client::builder()
            .connector(connector)
            .disable_redirects()
            .timeout(REQUEST_TIMEOUT)
            .add_default_header((header::USER_AGENT, "kinitro-verifier"))
            .finish();
        Ok(Self {
            cfg,
            endpoint,
            client,
        })
    }

    /// `path` (already encoded) under the endpoint.
    fn url(&self, path: &str) -> Result<Url, String> {
        let base = self.cfg.endpoint.trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|e| format!("bad URL {base}/{path}: {e}"))
    }

    /// The checks before a request to `url` that the connector cannot make: the scheme rule and
    /// IP-literal hosts (the connector resolves only names).
    fn check(&self, url: &Url) -> Result<(), String> {
        redirect_rule(self.endpoint.scheme(), url)?;
        let ip = match url.host() {
            None => return Err(format!("no host in {url}")),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        if admitted(ip, self.cfg.allow_private) {
            Ok(())
        } else {
            Err(format!("{ip} is not a public address"))
        }
    }

    /// GETs `url`, following redirects by hand; the 2xx answer, or why there is none.
    async fn get(&self, url: Url, deadline: Instant) -> Result<awc::ClientResponse, String> {
        let mut url = url;
        let mut seen = HashSet::new();
        for hop in 0.. {
            self.check(&url)?;
            seen.insert(url.clone());
            let mut request = self
                .client
                .get(url.as_str())
                .insert_header((header::ACCEPT_ENCODING, "identity"))
                .no_decompress();
            if let Some(token) = &self.cfg.token {
                if url.origin() == self.endpoint.origin() {
                    request = request.bearer_auth(token);
                }
            }
            let response =
                tokio::time::timeout(left(deadline)?.min(REQUEST_TIMEOUT), request.send())
                    .await
                    .map_err(|_| format!("{url}: timed out"))?
                    .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if !matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                return Err(format!("the Hub answered {status} for {url}"));
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("redirect without a usable Location from {url}"))?;
            let next = url
                .join(location)
                .map_err(|e| format!("bad redirect Location {location:?}: {e}"))?;
            if seen.contains(&next) {
                return Err(format!("redirect loop at {next}"));
            }
            if hop == MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects from {url}"));
            }
            url = next;
        }
        unreachable!("the redirect loop returns")
    }

    async fn listing(
        &self,
        repo: &str,
        revision: &str,
        deadline: Instant,
    ) -> Result<Vec<RepoFile>, HubError> {
        let url = self
            .url(&format!("api/models/{repo}/revision/{revision}?blobs=true"))
            .map_err(HubError::size)?;
        let mut response = self.get(url, deadline).await.map_err(HubError::size)?;
        if response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|l| l > LISTING_LIMIT as u64)
        {
            return Err(HubError::size("model info larger than 8 MiB"));
        }
        let mut body = Vec::new();
        while let Some(piece) = next_piece(&mut response, deadline)
            .await
            .map_err(HubError::size)?
        {
            if body.len() + piece.len() > LISTING_LIMIT {
                return Err(HubError::size("model info larger than 8 MiB"));
            }
            body.extend_from_slice(&piece);
        }
        parse_listing(&body, self.cfg.max_files, self.cfg.max_repo_bytes)
    }

    /// Downloads one listed file into `folder`, adding its bytes to `total`.
    async fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &RepoFile,
        folder: &Path,
        total: &mut u64,
        deadline: Instant,
    ) -> Result<(), HubError> {
        let encoded: Vec<String> = file
            .path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let url = self
            .url(&format!("{repo}/resolve/{revision}/{}", encoded.join("/")))
            .map_err(HubError::download)?;
        let mut response = self.get(url, deadline).await.map_err(HubError::download)?;
        let larger = || {
            HubError::Invalid(format!(
                "File {} is larger than its listing ({} bytes)",
                file.path, file.size
            ))
        };
        if let Some(encoding) = response.headers().get(header::CONTENT_ENCODING) {
            if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(HubError::download(format!(
                    "{} came with a content encoding",
                    file.path
                )));
            }
        }
        if response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|l| l > file.size)
        {
            return Err(larger());
        }

        let target = file
            .path
            .split('/')
            .fold(folder.to_path_buf(), |p, s| p.join(s));
        let local = |e: io::Error| HubError::download(format!("cannot write {}: {e}", file.path));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(local)?;
        }
        // create_new: never through anything already there (the folder is new and ours).
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .await
            .map_err(local)?;
        let mut got = 0u64;
        while let Some(piece) = next_piece(&mut response, deadline)
            .await
            .map_err(|e| HubError::download(format!("{}: {e}", file.path)))?
        {
            got += piece.len() as u64;
            *total += piece.len() as u64;
            if got > file.size {
                return Err(larger());
            }
            if *total > self.cfg.max_repo_bytes {
                return Err(HubError::Invalid(too_large(
                    *total,
                    self.cfg.max_repo_bytes,
                )));
            }
            out.write_all(&piece).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        if got < file.size {
            return Err(HubError::download(format!(
                "{} ended after {got} of its {} listed bytes",
                file.path, file.size
            )));
        }
        Ok(())
    }
}

/// Time left before `deadline`.
fn left(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_string())
}

/// The next piece of a body (`None` at its end), within [`READ_TIMEOUT`] and the deadline.
async fn next_piece(
    response: &mut awc::ClientResponse,
    deadline: Instant,
) -> Result<Option<bytes::Bytes>, String> {
    match tokio::time::timeout(left(deadline)?.min(READ_TIMEOUT), response.next()).await {
        Err(_) => Err("timed out reading the answer".to_string()),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(format!("reading the answer: {e}")),
        Ok(Some(Ok(piece))) => Ok(Some(piece)),
    }
}

/// Where one (repo, revision) lives in the cache.
#[derive(Clone, Debug)]
struct CachePaths {
    /// `cache_dir/<repo with / → _>`.
    repo_dir: PathBuf,
    /// The snapshot folder, `repo_dir/<revision[:12]>`.
    dir: PathBuf,
    /// Its completion marker, `repo_dir/.complete-<revision[:12]>`: the [`Marker`], present only
    /// once the snapshot is complete; its mtime is the snapshot's last use.
    marker: PathBuf,
    /// `revision[:12]`.
    short: String,
}

impl CachePaths {
    fn new(cache_dir: &Path, repo: &str, revision: &str) -> Self {
        let repo_dir = cache_dir.join(repo.replace('/', "_"));
        // Validated ASCII: byte slicing is on character boundaries.
        let short = revision[..revision.len().min(12)].to_string();
        Self {
            dir: repo_dir.join(&short),
            marker: repo_dir.join(format!("{MARKER_PREFIX}{short}")),
            repo_dir,
            short,
        }
    }
}

/// What a completion marker records.
#[derive(Serialize, Deserialize)]
struct Marker {
    repo: String,
    revision: String,
    bytes: u64,
    files: usize,
}

/// The complete snapshot of `repo` at `revision` when the cache has one that may be reused (a
/// commit id, within the limits); its marker's mtime is set to now.
fn reuse(
    paths: &CachePaths,
    repo: &str,
    revision: &str,
    max_bytes: u64,
    max_files: usize,
) -> Option<PathBuf> {
    if !is_commit(revision) {
        return None;
    }
    let marker: Marker = serde_json::from_slice(&std::fs::read(&paths.marker).ok()?).ok()?;
    if marker.repo != repo
        || marker.revision != revision
        || marker.bytes > max_bytes
        || marker.files > max_files
        || !std::fs::symlink_metadata(&paths.dir).ok()?.is_dir()
    {
        return None;
    }
    let touched = std::fs::File::options()
        .write(true)
        .open(&paths.marker)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::warn!(error = %e, marker = %paths.marker.display(), "cannot record the use of a cached snapshot");
    }
    Some(paths.dir.clone())
}

/// Puts a completed download in place of whatever the cache held for its revision, then writes
/// its marker.
fn install(paths: &CachePaths, partial: &Path, marker: &Marker) -> io::Result<()> {
    remove_if_present(std::fs::remove_file(&paths.marker))?;
    if std::fs::symlink_metadata(&paths.dir).is_ok() {
        remove_if_present(std::fs::remove_dir_all(&paths.dir))?;
    }
    std::fs::rename(partial, &paths.dir)?;
    std::fs::write(&paths.marker, serde_json::to_vec(marker)?)
}

fn remove_if_present(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A temporary download folder, removed when dropped unless disarmed (so a failed or cancelled
/// download leaves nothing behind).
struct PartialDir {
    path: PathBuf,
    armed: bool,
}

impl PartialDir {
    async fn create(paths: &CachePaths) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        tokio::fs::create_dir_all(&paths.repo_dir).await?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path = paths.repo_dir.join(format!(
            "{PARTIAL_PREFIX}{}-{}-{}-{nanos}",
            paths.short,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::create_dir(&path).await?;
        Ok(Self { path, armed: true })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One snapshot in the cache, for [`plan_trim`].
#[derive(Debug, Clone)]
struct CacheEntry {
    dir: PathBuf,
    marker: PathBuf,
    last_used: SystemTime,
    bytes: u64,
}

/// The entries to remove, least recently used first, until the rest fit in `max_bytes`; `keep`
/// is never removed.
fn plan_trim(entries: &[CacheEntry], max_bytes: u64, keep: &Path) -> Vec<usize> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].last_used);
    let mut doomed = Vec::new();
    for i in order {
        if total <= max_bytes {
            break;
        }
        if entries[i].dir == keep {
            continue;
        }
        total -= entries[i].bytes;
        doomed.push(i);
    }
    doomed
}

/// Trims the cache at `root` to `max_bytes` ([`plan_trim`]), and removes temporary folders older
/// than [`STALE_PARTIAL`] and markers without a snapshot. Returns the snapshots removed.
fn trim(root: &Path, max_bytes: u64, keep: &Path) -> io::Result<Vec<PathBuf>> {
    let now = SystemTime::now();
    let old = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_PARTIAL)
    };
    let mut entries = Vec::new();
    let mut repo_dirs = Vec::new();
    for repo_dir in std::fs::read_dir(root)? {
        let repo_dir = repo_dir?;
        if repo_dir.file_name().to_string_lossy().starts_with('.')
            || !repo_dir.file_type()?.is_dir()
        {
            continue;
        }
        let repo_dir = repo_dir.path();
        for item in std::fs::read_dir(&repo_dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if name.starts_with(PARTIAL_PREFIX) {
                if old(&meta) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            } else if let Some(short) = name.strip_prefix(MARKER_PREFIX) {
                if std::fs::symlink_metadata(repo_dir.join(short)).is_err() {
                    let _ = std::fs::remove_file(&path);
                }
            } else if meta.is_dir() {
                let marker = repo_dir.join(format!("{MARKER_PREFIX}{name}"));
                let last_used = std::fs::metadata(&marker)
                    .or(Ok::<_, io::Error>(meta))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push(CacheEntry {
                    bytes: folder_bytes(&path),
                    dir: path,
                    marker,
                    last_used,
                });
            }
        }
        repo_dirs.push(repo_dir);
    }
    let mut removed = Vec::new();
    for i in plan_trim(&entries, max_bytes, keep) {
        let e = &entries[i];
        // The marker first: a snapshot half removed is never taken for a complete one.
        remove_if_present(std::fs::remove_file(&e.marker))?;
        remove_if_present(std::fs::remove_dir_all(&e.dir))?;
        removed.push(e.dir.clone());
    }
    for dir in repo_dirs {
        let _ = std::fs::remove_dir(dir); // only when empty
    }
    Ok(removed)
}

/// Bytes of the files under `dir` (symlinks not followed).
fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(items) = std::fs::read_dir(&d) else {
            continue;
        };
        for item in items.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(item.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_and_revisions() {
        for good in ["a/b", "Org-1/model_v2.0", "x/y.z"] {
            assert!(validate_repo(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "a/b/c", "/b", "a/", "../b", "a/..", ".a/b", "a/-b", "a b/c", "a/b\\c",
            "a/%2e", "a/ü",
        ] {
            assert!(
                matches!(validate_repo(bad), Err(HubError::Invalid(_))),
                "{bad} must be refused"
            );
        }
        assert!(validate_repo(&format!("a/{}", "x".repeat(97))).is_err());
        for good in ["main", "v1.0", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(validate_revision(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".x",
            "-x",
            "a/b",
            "refs/pr/1",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_revision(bad).is_err(), "{bad} must be refused");
        }
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }

    #[test]
    fn file_names() {
        for good in [
            "policy.py",
            "a/b/c.bin",
            ".gitattributes",
            "a..b",
            "dir/.hidden",
        ] {
            assert_eq!(refused_name(good), None, "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("../evil.py", "path traversal"),
            ("a/../../evil", "path traversal"),
            ("./x", "path traversal"),
            ("/etc/x", "absolute path"),
            ("a\\b", "backslash"),
            ("a//b", "empty path segment"),
            ("a/", "empty path segment"),
            ("a\nb", "control character"),
        ] {
            assert_eq!(refused_name(bad), Some(why), "{bad:?}");
        }
        assert_eq!(
            refused_name(&"x".repeat(256)),
            Some("path segment too long")
        );
    }

    fn listing(siblings: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "id": "a/b", "siblings": siblings })).unwrap()
    }

    #[test]
    fn listing_sizes() {
        let body = listing(serde_json::json!([
            {"rfilename": "policy.py", "size": 10},
            {"rfilename": "w.bin", "size": 5, "lfs": {"size": 7, "sha256": "x"}},
            {"rfilename": "x.bin", "lfs": {"size": 3}},
        ]));
        let files = parse_listing(&body, 10, 20).unwrap();
        let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
        assert_eq!(sizes, [10, 7, 3]);
        // 20 bytes exactly is allowed, 19 is not.
        assert!(matches!(
            parse_listing(&body, 10, 19),
            Err(HubError::Invalid(m)) if m.starts_with("Repository size (0.00 GB) exceeds maximum allowed (0.00 GB)")
        ));
        assert!(
            matches!(parse_listing(&body, 2, 20), Err(HubError::Invalid(m)) if m.contains("3 files"))
        );
    }

    #[test]
    fn listing_fails_closed() {
        let unverifiable = |v: serde_json::Value| match parse_listing(&listing(v), 10, 1 << 30) {
            Err(HubError::Unverifiable(m)) => m,
            other => panic!("expected unverifiable, got {other:?}"),
        };
        let m = unverifiable(serde_json::json!([{"rfilename": "policy.py"}]));
        assert_eq!(
            m,
            r#"Cannot verify repository size: no size given for "policy.py""#
        );
        unverifiable(serde_json::json!([{"rfilename": "policy.py", "size": -1}]));
        unverifiable(serde_json::json!([{"rfilename": "policy.py", "size": 1.5}]));
        unverifiable(serde_json::json!([{"rfilename": "policy.py", "size": "1"}]));
        let m = unverifiable(serde_json::json!([
            {"rfilename": "policy.py", "size": 1}, {"rfilename": "../evil.py", "size": 1}
        ]));
        assert!(m.contains("path traversal"), "{m}");
        let m = unverifiable(serde_json::json!([
            {"rfilename": "policy.py", "size": 1}, {"rfilename": "policy.py", "size": 1}
        ]));
        assert!(m.contains("twice"), "{m}");
        let m = unverifiable(serde_json::json!([
            {"rfilename": "policy.py", "size": 1}, {"rfilename": "a", "size": 1}, {"rfilename": "a/b", "size": 1}
        ]));
        assert!(m.contains("both"), "{m}");
        assert!(matches!(
            parse_listing(b"{}", 10, 10),
            Err(HubError::Unverifiable(m)) if m.contains("lists no files")
        ));
        assert!(matches!(
            parse_listing(b"not json", 10, 10),
            Err(HubError::Unverifiable(m)) if m.starts_with("Cannot verify repository size: malformed")
        ));
        // A huge listed size neither overflows nor passes.
        let huge = listing(serde_json::json!([
            {"rfilename": "policy.py", "size": u64::MAX}, {"rfilename": "b", "size": u64::MAX}
        ]));
        assert!(matches!(
            parse_listing(&huge, 10, 1 << 30),
            Err(HubError::Invalid(_))
        ));
        // No policy.py (a nested one does not count).
        let none = listing(serde_json::json!([{"rfilename": "sub/policy.py", "size": 1}]));
        assert_eq!(
            parse_listing(&none, 10, 10),
            Err(HubError::Invalid("No policy.py in the repository".into()))
        );
    }

    #[test]
    fn size_message() {
        assert_eq!(
            too_large(gb_to_bytes(6.5), gb_to_bytes(5.0)),
            "Repository size (6.50 GB) exceeds maximum allowed (5.00 GB)"
        );
        assert_eq!(gb_to_bytes(-1.0), 0);
        assert_eq!(gb_to_bytes(f64::NAN), 0);
    }

    #[test]
    fn redirect_rules() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(redirect_rule("https", &u("https://cdn.example/x")).is_ok());
        assert!(redirect_rule("http", &u("https://cdn.example/x")).is_ok());
        assert!(redirect_rule("http", &u("http://cdn.example/x")).is_ok());
        let e = redirect_rule("https", &u("http://cdn.example/x")).unwrap_err();
        assert!(e.contains("https to http"), "{e}");
        for other in [
            "file:///etc/passwd",
            "ftp://h/x",
            "data:text/plain,x",
            "gopher://h/",
        ] {
            let e = redirect_rule("http", &u(other)).unwrap_err();
            assert!(e.contains("URL refused"), "{e}");
        }
    }

    #[test]
    fn guard_admits_loopback_only_when_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!admitted(ip("127.0.0.1"), false));
        assert!(admitted(ip("127.0.0.1"), true));
        assert!(admitted(ip("::1"), true));
        assert!(admitted(ip("::ffff:127.0.0.1"), true));
        assert!(!admitted(ip("10.0.0.1"), true));
        assert!(!admitted(ip("192.168.1.1"), true));
        assert!(admitted(ip("8.8.8.8"), false));
    }

    fn entry(dir: &str, age_s: u64, bytes: u64) -> CacheEntry {
        CacheEntry {
            dir: PathBuf::from(dir),
            marker: PathBuf::from(format!("{dir}.m")),
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s),
            bytes,
        }
    }

    #[test]
    fn trim_plan_removes_least_recently_used_first() {
        let entries = [
            entry("new", 1, 40),
            entry("oldest", 300, 40),
            entry("middle", 200, 40),
        ];
        let names = |v: Vec<usize>| -> Vec<&str> {
            v.into_iter()
                .map(|i| entries[i].dir.to_str().unwrap())
                .collect()
        };
        assert!(plan_trim(&entries, 120, Path::new("new")).is_empty());
        assert_eq!(names(plan_trim(&entries, 80, Path::new("new"))), ["oldest"]);
        assert_eq!(
            names(plan_trim(&entries, 79, Path::new("new"))),
            ["oldest", "middle"]
        );
        // The one just made stays even when it alone is over the limit.
        assert_eq!(
            names(plan_trim(&entries, 0, Path::new("oldest"))),
            ["middle", "new"]
        );
    }

    #[test]
    fn trim_on_disk() {
        let root = tempfile::tempdir().unwrap();
        let make = |repo: &str, rev: &str, bytes: usize, age_s: u64| {
            let p = CachePaths::new(root.path(), repo, rev);
            std::fs::create_dir_all(p.dir.join("sub")).unwrap();
            std::fs::write(p.dir.join("sub/f"), vec![0u8; bytes]).unwrap();
            std::fs::write(&p.marker, b"{}").unwrap();
            let t = SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&p.marker)
                .unwrap()
                .set_modified(t)
                .unwrap();
            p
        };
        let a = make("o/a", "aaaaaaaaaaaaaaaa", 100, 300);
        let b = make("o/b", "bbbb", 100, 200);
        let c = make("o/a", "cccc", 100, 1);
        // A stale temporary folder and an orphan marker go whatever the size.
        let stale = a.repo_dir.join(format!("{PARTIAL_PREFIX}x"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::File::open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_PARTIAL)
            .unwrap();
        let fresh = a.repo_dir.join(format!("{PARTIAL_PREFIX}y"));
        std::fs::create_dir(&fresh).unwrap();
        let orphan = a.repo_dir.join(format!("{MARKER_PREFIX}gone"));
        std::fs::write(&orphan, b"{}").unwrap();

        let removed = trim(root.path(), 250, &c.dir).unwrap();
        assert_eq!(removed, std::slice::from_ref(&a.dir));
        assert!(!a.marker.exists() && !a.dir.exists());
        assert!(b.dir.exists() && c.dir.exists());
        assert!(!stale.exists() && fresh.exists() && !orphan.exists());
        assert_eq!(a.dir.file_name().unwrap(), "aaaaaaaaaaaa");

        // Everything but the kept one, and the emptied repository folder is removed.
        let removed = trim(root.path(), 0, &c.dir).unwrap();
        assert_eq!(removed, std::slice::from_ref(&b.dir));
        assert!(!b.repo_dir.exists() && c.dir.exists());
    }

    #[test]
    fn reuse_needs_a_complete_commit_snapshot() {
        let root = tempfile::tempdir().unwrap();
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let p = CachePaths::new(root.path(), "o/a", rev);
        std::fs::create_dir_all(&p.dir).unwrap();
        assert_eq!(reuse(&p, "o/a", rev, 100, 10), None, "no marker yet");
        let marker = |repo: &str, revision: &str, bytes| {
            serde_json::to_vec(&Marker {
                repo: repo.into(),
                revision: revision.into(),
                bytes,
                files: 1,
            })
            .unwrap()
        };
        std::fs::write(&p.marker, marker("o/a", rev, 50)).unwrap();
        let old = SystemTime::now() - Duration::from_secs(1000);
        std::fs::File::options()
            .write(true)
            .open(&p.marker)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(reuse(&p, "o/a", rev, 100, 10), Some(p.dir.clone()));
        let touched = std::fs::metadata(&p.marker).unwrap().modified().unwrap();
        assert!(
            touched > old + Duration::from_secs(500),
            "the use is recorded"
        );
        assert_eq!(reuse(&p, "o/a", rev, 49, 10), None, "over today's limit");
        // Same 12-character prefix, another revision or repository: not reused.
        let other = "0123456789abffffffffffffffffffffffffffff";
        assert_eq!(reuse(&p, "o/a", other, 100, 10), None);
        std::fs::write(&p.marker, marker("o_a", rev, 50)).unwrap();
        assert_eq!(reuse(&p, "o/a", rev, 100, 10), None);
        // Branch names are never reused.
        let m = CachePaths::new(root.path(), "o/a", "main");
        std::fs::create_dir_all(&m.dir).unwrap();
        std::fs::write(&m.marker, marker("o/a", "main", 1)).unwrap();
        assert_eq!(reuse(&m, "o/a", "main", 100, 10), None);
    }
}
