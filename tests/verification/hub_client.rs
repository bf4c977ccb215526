//! Hub client against the fake Hub (docs/verification.md §2.1–2.2, §4).

use std::path::{Path, PathBuf};

use crate::common::fake_hub::{FakeHub, FakeRepo, Knobs, Redirect};
use kinitro::verify::hub::{self, HubConfig, HubError};

const REPO: &str = "miner/policy";
const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// A miner repository on disk: policy.py, a nested file with an awkward name, and a weight file
/// large enough to be listed as LFS.
fn repo_dir(root: &Path) -> PathBuf {
    let dir = root.join("repo");
    std::fs::create_dir_all(dir.join("sub dir")).unwrap();
    std::fs::write(dir.join("policy.py"), "class RobotPolicy:\n    pass\n").unwrap();
    std::fs::write(dir.join("sub dir/rl interface+1.py"), "x = 1\n").unwrap();
    std::fs::write(dir.join("weights.bin"), vec![7u8; 64 * 1024]).unwrap();
    dir
}

fn config(root: &Path, endpoint: String) -> HubConfig {
    HubConfig {
        endpoint,
        token: Some("hf_test".into()),
        allow_private: true,
        max_repo_bytes: 1 << 20,
        max_files: 100,
        cache_dir: root.join("cache"),
        cache_max_bytes: 1 << 30,
    }
}

/// A hub serving the test repository with `knobs`, and a config pointing at it.
fn setup(knobs: Knobs) -> (tempfile::TempDir, FakeHub, HubConfig) {
    let root = tempfile::tempdir().unwrap();
    let dir = repo_dir(root.path());
    let fake = FakeHub::start(vec![FakeRepo::new(REPO, REV, dir).with(knobs)]);
    let cfg = config(root.path(), fake.url());
    (root, fake, cfg)
}

fn unverifiable(r: Result<PathBuf, HubError>) -> String {
    match r {
        Err(HubError::Unverifiable(m)) => m,
        other => panic!("expected unverifiable, got {other:?}"),
    }
}

fn invalid(r: Result<PathBuf, HubError>) -> String {
    match r {
        Err(HubError::Invalid(m)) => m,
        other => panic!("expected invalid, got {other:?}"),
    }
}

/// Files under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            assert!(!meta.file_type().is_symlink(), "no symlinks");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[actix_rt::test]
async fn snapshot_downloads_real_files_and_reuses_them() {
    let (root, fake, cfg) = setup(Knobs::default());
    let files = hub::model_files(&cfg, REPO, REV).await.unwrap();
    let mut names: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("policy.py", 28),
            ("sub dir/rl interface+1.py", 6),
            ("weights.bin", 65536)
        ]
    );

    let dir = hub::snapshot(&cfg, REPO, REV).await.unwrap();
    assert_eq!(dir, root.path().join("cache/miner_policy/0123456789ab"));
    assert_eq!(
        tree(&dir),
        ["policy.py", "sub dir/rl interface+1.py", "weights.bin"]
    );
    let src = root.path().join("repo");
    for f in tree(&dir) {
        assert_eq!(
            std::fs::read(dir.join(&f)).unwrap(),
            std::fs::read(src.join(&f)).unwrap(),
            "{f}"
        );
    }
    // Nothing but the snapshot and its marker is left in the cache.
    assert_eq!(
        tree(&root.path().join("cache")),
        [
            "miner_policy/.complete-0123456789ab",
            "miner_policy/0123456789ab/policy.py",
            "miner_policy/0123456789ab/sub dir/rl interface+1.py",
            "miner_policy/0123456789ab/weights.bin",
        ]
    );
    let requests = fake.requests();
    assert!(requests
        .iter()
        .any(|(p, _)| p == &format!("/api/models/{REPO}/revision/{REV}?blobs=true")));
    assert!(requests.iter().any(|(p, _)| p.ends_with(
        "/resolve/0123456789abcdef0123456789abcdef01234567/sub%20dir/rl%20interface%2B1.py"
    )));
    assert!(requests
        .iter()
        .all(|(_, a)| a.as_deref() == Some("Bearer hf_test")));

    // A second call reuses the cache: no request reaches the (now down) hub.
    fake.set_knobs(Knobs {
        down: true,
        ..Knobs::default()
    });
    let before = fake.requests().len();
    assert_eq!(hub::snapshot(&cfg, REPO, REV).await.unwrap(), dir);
    assert_eq!(fake.requests().len(), before);
}

#[actix_rt::test]
async fn too_large_by_listing_is_invalid() {
    let (root, _fake, mut cfg) = setup(Knobs {
        inflate_listing: true,
        ..Knobs::default()
    });
    cfg.max_repo_bytes = hub::gb_to_bytes(5.0);
    let m = invalid(hub::snapshot(&cfg, REPO, REV).await);
    assert_eq!(
        m,
        "Repository size (1024.00 GB) exceeds maximum allowed (5.00 GB)"
    );
    assert!(!root.path().join("cache/miner_policy/0123456789ab").exists());

    // The real sizes against a tighter limit.
    let (_root, _fake, mut cfg) = setup(Knobs::default());
    cfg.max_repo_bytes = 1000;
    let m = invalid(hub::snapshot(&cfg, REPO, REV).await);
    assert!(
        m.starts_with("Repository size (0.00 GB) exceeds maximum allowed"),
        "{m}"
    );
}

#[actix_rt::test]
async fn body_larger_than_its_listing_is_invalid() {
    let (root, _fake, cfg) = setup(Knobs {
        lie_sizes: true,
        ..Knobs::default()
    });
    let m = invalid(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.contains("is larger than its listing"), "{m}");
    // The partial download is gone.
    assert!(tree(&root.path().join("cache")).is_empty());
}

#[actix_rt::test]
async fn no_policy_py_is_invalid() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.py"), "x").unwrap();
    let fake = FakeHub::start(vec![FakeRepo::new(REPO, REV, dir)]);
    let cfg = config(root.path(), fake.url());
    assert_eq!(
        invalid(hub::snapshot(&cfg, REPO, REV).await),
        "No policy.py in the repository"
    );
}

#[actix_rt::test]
async fn hub_down_or_unreachable_is_unverifiable() {
    let (_root, _fake, cfg) = setup(Knobs {
        down: true,
        ..Knobs::default()
    });
    let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.starts_with("Cannot verify repository size: "), "{m}");
    assert!(m.contains("503"), "{m}");

    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), FakeHub::unreachable_url());
    let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.starts_with("Cannot verify repository size: "), "{m}");

    // Unknown revision, and sizes missing from the listing: fail closed.
    let (_root, _fake, cfg) = setup(Knobs::default());
    let m = unverifiable(hub::snapshot(&cfg, REPO, "main").await);
    assert!(m.contains("404"), "{m}");
    let (_root, _fake, cfg) = setup(Knobs {
        omit_sizes: true,
        ..Knobs::default()
    });
    let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.contains("no size given"), "{m}");
}

#[actix_rt::test]
async fn loopback_hub_needs_allow_private() {
    let (_root, _fake, mut cfg) = setup(Knobs::default());
    cfg.allow_private = false;
    let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.contains("127.0.0.1 is not a public address"), "{m}");
    // A name resolving to loopback is refused by the connector's resolver.
    cfg.endpoint = cfg.endpoint.replace("127.0.0.1", "localhost");
    let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
    assert!(m.contains("non-public address"), "{m}");
}

#[actix_rt::test]
async fn path_traversal_is_unverifiable_and_writes_nothing_outside() {
    for evil in [
        "../evil.py",
        "../../evil.py",
        "/etc/x",
        "a/../../evil.py",
        "a\\..\\evil.py",
        "a//b",
    ] {
        let (root, _fake, cfg) = setup(Knobs {
            extra_listing: Some(evil.into()),
            ..Knobs::default()
        });
        let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
        assert!(m.contains("refused file name"), "{evil}: {m}");
        // Only the repository folder and (perhaps) an empty cache are under the root.
        let mut top: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert!(top == ["repo"] || top == ["cache", "repo"], "{top:?}");
        assert!(tree(&root.path().join("repo")).len() == 3);
        if root.path().join("cache").exists() {
            assert!(tree(&root.path().join("cache")).is_empty());
        }
    }
}

#[actix_rt::test]
async fn hostile_redirects_are_unverifiable() {
    for (redirect, expect) in [
        (Redirect::FileScheme, "redirect to a file: URL refused"),
        (Redirect::FtpScheme, "redirect to a ftp: URL refused"),
        (Redirect::Loop, "redirect loop"),
        (Redirect::Chain(4), "more than 3 redirects"),
    ] {
        let (root, _fake, cfg) = setup(Knobs {
            redirect: Some(redirect.clone()),
            ..Knobs::default()
        });
        let m = unverifiable(hub::snapshot(&cfg, REPO, REV).await);
        assert!(m.starts_with("Cannot download repository: "), "{m}");
        assert!(m.contains(expect), "{redirect:?}: {m}");
        assert!(tree(&root.path().join("cache")).is_empty());
    }
}

#[actix_rt::test]
async fn three_redirects_are_followed() {
    let (_root, _fake, cfg) = setup(Knobs {
        redirect: Some(Redirect::Chain(3)),
        ..Knobs::default()
    });
    hub::snapshot(&cfg, REPO, REV).await.unwrap();
}

#[actix_rt::test]
async fn redirect_to_another_loopback_port_is_followed() {
    let root = tempfile::tempdir().unwrap();
    let dir = repo_dir(root.path());
    let cdn = FakeHub::start(vec![FakeRepo::new(REPO, REV, dir.clone())]);
    let fake = FakeHub::start(vec![FakeRepo::new(REPO, REV, dir).with(Knobs {
        redirect: Some(Redirect::ToOtherServer(cdn.url())),
        ..Knobs::default()
    })]);
    let cfg = config(root.path(), fake.url());
    let snap = hub::snapshot(&cfg, REPO, REV).await.unwrap();
    assert_eq!(tree(&snap).len(), 3);
    // The files came from the second server, which never saw the token.
    let cdn_requests = cdn.requests();
    assert_eq!(cdn_requests.len(), 3);
    assert!(cdn_requests.iter().all(|(_, auth)| auth.is_none()));
    // Without allow_private, even the redirect target would be refused (the hub itself is too).
}

#[actix_rt::test]
async fn http_to_http_redirect_is_followed_on_an_http_endpoint() {
    // HttpsToHttp redirects to http:// on the same server: allowed only because the endpoint
    // itself is http (the https case is covered by the redirect-rule unit test).
    let (_root, _fake, cfg) = setup(Knobs {
        redirect: Some(Redirect::HttpsToHttp),
        ..Knobs::default()
    });
    hub::snapshot(&cfg, REPO, REV).await.unwrap();
}

#[actix_rt::test]
async fn bad_names_are_invalid_without_a_request() {
    let (_root, fake, cfg) = setup(Knobs::default());
    assert!(matches!(
        hub::snapshot(&cfg, "../etc", REV).await,
        Err(HubError::Invalid(_))
    ));
    assert!(matches!(
        hub::model_files(&cfg, REPO, "../x").await,
        Err(HubError::Invalid(_))
    ));
    assert!(fake.requests().is_empty());
}

#[actix_rt::test]
async fn cache_is_trimmed_to_its_limit() {
    let root = tempfile::tempdir().unwrap();
    let dir = repo_dir(root.path());
    let revs = [
        "1111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222",
        "3333333333333333333333333333333333333333",
    ];
    let fake = FakeHub::start(
        revs.iter()
            .map(|r| FakeRepo::new(REPO, r, dir.clone()))
            .collect(),
    );
    let mut cfg = config(root.path(), fake.url());
    cfg.cache_max_bytes = 2 * 65570 + 100; // two snapshots fit
    let mut made = Vec::new();
    for r in revs {
        made.push(hub::snapshot(&cfg, REPO, r).await.unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!made[0].exists(), "least recently used removed");
    assert!(made[1].exists() && made[2].exists());
    // Use the second again, then a fourth download evicts the third.
    hub::snapshot(&cfg, REPO, revs[1]).await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let _ = hub::snapshot(&cfg, REPO, revs[0]).await.unwrap();
    assert!(made[0].exists() && made[1].exists() && !made[2].exists());
}
