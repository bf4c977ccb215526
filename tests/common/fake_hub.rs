//! A fake HuggingFace Hub for tests (docs/verification.md §2.2): an actix-web server on a loopback
//! port, run on its own thread (so it answers whatever runtime the test uses), serving the real
//! files of local folders as repositories at a revision, with knobs for the hostile answers the
//! verifier must refuse. Only the two routes verification uses are served:
//! `GET /api/models/{owner}/{name}/revision/{revision}` (sizes only with `?blobs=true`, as the
//! real Hub) and `GET /{owner}/{name}/resolve/{revision}/{path}`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// Files at least this large are listed with an `lfs` object too, as the real Hub lists LFS files.
const LFS_FROM: u64 = 10 * 1024;

/// Where a download is redirected.
#[derive(Clone, Debug)]
pub enum Redirect {
    /// To the same path on another server (e.g. a second [`FakeHub`], standing in for the Hub's
    /// LFS download hosts): its base URL.
    ToOtherServer(String),
    /// To `file:///etc/passwd`.
    FileScheme,
    /// To `ftp://` on the same host.
    FtpScheme,
    /// To the same path over `http://` on this server (a downgrade when the client came by https).
    HttpsToHttp,
    /// Back and forth between two URLs, forever.
    Loop,
    /// Through `n` different URLs of this server before the file.
    Chain(usize),
}

/// The hostile behaviours, per repository ([`FakeRepo::knobs`]) or for the whole hub
/// ([`FakeHub::set_knobs`]); a knob is on when either turns it on.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// The listing gives every non-empty file half its real size (the body is larger).
    pub lie_sizes: bool,
    /// A further listed file with this name (e.g. `../evil.py`, `/etc/x`), served as `evil`.
    pub extra_listing: Option<String>,
    /// The listing gives `policy.py` a size of 1 TiB.
    pub inflate_listing: bool,
    /// Listed files come without any size.
    pub omit_sizes: bool,
    /// Downloads are redirected.
    pub redirect: Option<Redirect>,
    /// Every request is answered 503.
    pub down: bool,
}

impl Knobs {
    fn or(&self, other: &Knobs) -> Knobs {
        Knobs {
            lie_sizes: self.lie_sizes || other.lie_sizes,
            extra_listing: self
                .extra_listing
                .clone()
                .or_else(|| other.extra_listing.clone()),
            inflate_listing: self.inflate_listing || other.inflate_listing,
            omit_sizes: self.omit_sizes || other.omit_sizes,
            redirect: self.redirect.clone().or_else(|| other.redirect.clone()),
            down: self.down || other.down,
        }
    }
}

/// One repository at one revision: the files under `dir`.
#[derive(Clone, Debug)]
pub struct FakeRepo {
    /// `owner/name`.
    pub name: String,
    /// The revision it answers to.
    pub revision: String,
    /// Its files.
    pub dir: PathBuf,
    /// Its hostile behaviours.
    pub knobs: Knobs,
}

impl FakeRepo {
    /// `dir`'s files as `name` at `revision`, well behaved.
    pub fn new(name: &str, revision: &str, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            revision: revision.to_string(),
            dir: dir.into(),
            knobs: Knobs::default(),
        }
    }

    /// The same with `knobs`.
    pub fn with(mut self, knobs: Knobs) -> Self {
        self.knobs = knobs;
        self
    }
}

struct State {
    repos: Vec<FakeRepo>,
    global: Mutex<Knobs>,
    /// Requests seen: path and query, and the Authorization header.
    requests: Mutex<Vec<(String, Option<String>)>>,
}

impl State {
    fn repo(&self, owner: &str, name: &str, revision: &str) -> Option<(FakeRepo, Knobs)> {
        let global = self.global.lock().unwrap().clone();
        self.repos
            .iter()
            .find(|r| r.name == format!("{owner}/{name}") && r.revision == revision)
            .map(|r| (r.clone(), r.knobs.or(&global)))
    }
}

/// A running fake Hub, stopped when dropped.
pub struct FakeHub {
    port: u16,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHub {
    /// Serves `repos` on a free loopback port.
    pub fn start(repos: Vec<FakeRepo>) -> Self {
        let state = Arc::new(State {
            repos,
            global: Mutex::new(Knobs::default()),
            requests: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route(
                            "/api/models/{owner}/{name}/revision/{revision}",
                            web::get().to(listing),
                        )
                        .route(
                            "/{owner}/{name}/resolve/{revision}/{path:.*}",
                            web::get().to(resolve),
                        )
                })
                .workers(1)
                .bind(("127.0.0.1", 0))
                .unwrap();
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                let _ = server.await;
            })
        });
        let (port, handle) = rx.recv().expect("fake hub did not start");
        Self {
            port,
            state,
            handle,
            thread: Some(thread),
        }
    }

    /// Its base URL, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sets the hub-wide knobs (combined with each repository's).
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.state.global.lock().unwrap() = knobs;
    }

    /// The requests seen so far: path with query, and the Authorization header if any.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// A URL nobody listens on (a hub that is down and not even answering).
    pub fn unreachable_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        // stop() sends the command at once; its future only reports completion.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The files under `dir`, `/`-separated relative paths with their sizes, in name order.
fn files_of(dir: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let name: Vec<_> = rel.iter().map(|s| s.to_string_lossy()).collect();
                out.insert(name.join("/"), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn record(state: &State, req: &HttpRequest) {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let target = req
        .uri()
        .path_and_query()
        .map_or(String::new(), |p| p.to_string());
    state.requests.lock().unwrap().push((target, auth));
}

async fn listing(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    record(&state, &req);
    let (owner, name, revision) = path.into_inner();
    let Some((repo, knobs)) = state.repo(&owner, &name, &revision) else {
        return if state.global.lock().unwrap().down {
            HttpResponse::ServiceUnavailable().finish()
        } else {
            HttpResponse::NotFound().json(json!({"error": "Repository not found"}))
        };
    };
    if knobs.down {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let blobs = req.query_string().split('&').any(|p| p == "blobs=true");
    let mut siblings: Vec<Value> = files_of(&repo.dir)
        .into_iter()
        .map(|(name, path)| {
            let real = std::fs::metadata(&path).unwrap().len();
            let mut size = if knobs.lie_sizes { real / 2 } else { real };
            if knobs.inflate_listing && name == "policy.py" {
                size = 1 << 40;
            }
            let mut entry = json!({ "rfilename": name });
            if blobs && !knobs.omit_sizes {
                entry["size"] = json!(size);
                if real >= LFS_FROM {
                    entry["lfs"] =
                        json!({ "size": size, "sha256": "0".repeat(64), "pointerSize": 134 });
                }
            }
            entry
        })
        .collect();
    if let Some(extra) = &knobs.extra_listing {
        let mut entry = json!({ "rfilename": extra });
        if blobs && !knobs.omit_sizes {
            entry["size"] = json!(4);
        }
        siblings.push(entry);
    }
    HttpResponse::Ok().json(json!({
        "id": repo.name,
        "modelId": repo.name,
        "sha": repo.revision,
        "private": false,
        "siblings": siblings,
    }))
}

async fn resolve(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
) -> HttpResponse {
    record(&state, &req);
    let (owner, name, revision, file) = path.into_inner();
    let Some((repo, knobs)) = state.repo(&owner, &name, &revision) else {
        return HttpResponse::NotFound().finish();
    };
    if knobs.down {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let here = req.uri().path().to_string();
    let query = req.query_string().to_string();
    let redirect = |to: String| {
        HttpResponse::Found()
            .insert_header(("location", to))
            .finish()
    };
    match &knobs.redirect {
        Some(Redirect::ToOtherServer(base)) => {
            return redirect(format!("{}{here}", base.trim_end_matches('/')))
        }
        Some(Redirect::FileScheme) => return redirect("file:///etc/passwd".into()),
        Some(Redirect::FtpScheme) => {
            return redirect(format!(
                "ftp://127.0.0.1:{}{here}",
                req.app_config().local_addr().port()
            ))
        }
        Some(Redirect::HttpsToHttp) if query.is_empty() => {
            let port = req.app_config().local_addr().port();
            return redirect(format!("http://127.0.0.1:{port}{here}?downgraded=1"));
        }
        Some(Redirect::Loop) => {
            return redirect(if query.is_empty() {
                format!("{here}?loop=1")
            } else {
                here
            })
        }
        Some(Redirect::Chain(n)) => {
            let hop: usize = query
                .strip_prefix("hop=")
                .and_then(|h| h.parse().ok())
                .unwrap_or(0);
            if hop < *n {
                return redirect(format!("{here}?hop={}", hop + 1));
            }
        }
        _ => {}
    }
    if knobs.extra_listing.as_deref() == Some(file.as_str()) {
        return HttpResponse::Ok().body("evil");
    }
    match files_of(&repo.dir).get(&file) {
        Some(p) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(std::fs::read(p).unwrap()),
        None => HttpResponse::NotFound().finish(),
    }
}
