//! The miners-file source (docs/scheduler.md §4.2): TOML or JSON by extension, re-read every cycle.

use std::collections::HashSet;
use std::path::Path;

use kinitro_actors::registry::MinerEntry;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    uid: u16,
    hotkey: String,
    commitment: Option<String>,
    endpoint: Option<String>,
    commit_block: u64,
    repo: Option<String>,
    revision: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinersFile {
    miners: Vec<FileEntry>,
}

/// Reads and checks the file; every file-level problem is `miners file error: <path>: <detail>`.
pub fn read(path: &Path) -> Result<Vec<MinerEntry>, String> {
    let fail = |detail: String| format!("miners file error: {}: {detail}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let file: MinersFile = if is_json {
        serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?
    } else {
        toml::from_str(&text).map_err(|e| fail(e.message().to_string()))?
    };
    let mut uids = HashSet::new();
    let mut out = Vec::with_capacity(file.miners.len());
    for (i, m) in file.miners.into_iter().enumerate() {
        let at = |d: &str| fail(format!("miners[{i}]: {d}"));
        if !uids.insert(m.uid) {
            return Err(at(&format!("duplicate uid {}", m.uid)));
        }
        let hk = m.hotkey.chars().count();
        if hk == 0 || hk > 64 || m.hotkey.chars().any(char::is_whitespace) {
            return Err(at("hotkey must be 1 to 64 characters without whitespace"));
        }
        if m.commitment.is_some() == m.endpoint.is_some() {
            return Err(at("exactly one of commitment or endpoint is required"));
        }
        if m.endpoint.is_none() && (m.repo.is_some() || m.revision.is_some()) {
            return Err(at("repo and revision are only allowed with endpoint"));
        }
        if m.repo.as_ref().is_some_and(|r| r.chars().count() > 256)
            || m.revision.as_ref().is_some_and(|r| r.chars().count() > 64)
        {
            return Err(at("repo is limited to 256 and revision to 64 characters"));
        }
        out.push(MinerEntry {
            uid: m.uid,
            hotkey: m.hotkey,
            commitment: m.commitment,
            endpoint_override: m.endpoint,
            commit_block: Some(m.commit_block),
            repo: m.repo,
            revision: m.revision,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(name), text).unwrap();
        d
    }

    #[test]
    fn example_file_reads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/miners.example.toml");
        let m = read(&p).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1].endpoint_override.as_deref(),
            Some("http://127.0.0.1:8001")
        );
        assert_eq!(m[1].repo.as_deref(), Some("local/expert"));
    }

    #[test]
    fn file_level_errors() {
        let cases = [
            ("m.toml", "[[miners]]\nuid = 0\nhotkey = \"a\"\ncommit_block = 1\n", "exactly one of commitment or endpoint"),
            ("m.toml", "[[miners]]\nuid = 0\nhotkey = \"a\"\ncommitment = \"x\"\ncommit_block = 1\nbogus = 1\n", "unknown field"),
            ("m.json", r#"{"miners": [{"uid": 1, "hotkey": "a", "commitment": "x", "commit_block": 1}, {"uid": 1, "hotkey": "b", "commitment": "x", "commit_block": 1}]}"#, "duplicate uid 1"),
            ("m.json", r#"{"miners": [{"uid": 70000, "hotkey": "a", "commitment": "x", "commit_block": 1}]}"#, "70000"),
            ("m.toml", "[[miners]]\nuid = 0\nhotkey = \"a b\"\ncommitment = \"x\"\ncommit_block = 1\n", "whitespace"),
            ("m.toml", "[[miners]]\nuid = 0\nhotkey = \"a\"\ncommitment = \"x\"\n", "commit_block"),
            ("m.toml", "[[miners]\n", "miners file error"),
        ];
        for (name, text, want) in cases {
            let d = write(name, text);
            let err = read(&d.path().join(name)).unwrap_err();
            assert!(err.starts_with("miners file error: "), "{err}");
            assert!(err.contains(want), "{err} should mention {want}");
        }
        assert!(read(Path::new("/nonexistent/m.toml"))
            .unwrap_err()
            .starts_with("miners file error: /nonexistent/m.toml: "));
    }
}
