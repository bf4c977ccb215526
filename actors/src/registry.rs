//! Miner registry entries and their classification (docs/scheduler.md §4–5 and §10): commitment
//! parsing, deployment-id validation (the endpoint-injection guard), endpoint derivation, and full-URL
//! endpoints from the miners file.

/// One registered uid as a `MinerSource` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinerEntry {
    /// Uid.
    pub uid: u16,
    /// SS58 hotkey (chain) or any 1–64 characters without whitespace (file).
    pub hotkey: String,
    /// Raw commitment text.
    pub commitment: Option<String>,
    /// Miners file only: a full URL instead of a commitment.
    pub endpoint_override: Option<String>,
    /// Block of the commitment registration.
    pub commit_block: Option<u64>,
    /// Miners file only, informational (with `endpoint_override`).
    pub repo: Option<String>,
    /// Miners file only, informational.
    pub revision: Option<String>,
}

/// Status of a snapshot entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinerStatus {
    /// Receives tasks.
    Active,
    /// No usable commitment (none, or encrypted without a key).
    Inactive,
    /// The commitment or endpoint is refused.
    InvalidCommitment,
    /// Held out by the `exclude` verification policy after a failed verification of its current
    /// revision (docs/verification.md §4).
    Excluded,
}

impl MinerStatus {
    /// The database/API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::InvalidCommitment => "invalid_commitment",
            Self::Excluded => "excluded",
        }
    }
}

/// A classified snapshot entry: what the `miners` row stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedMiner {
    /// The entry as read.
    pub entry: MinerEntry,
    /// Status.
    pub status: MinerStatus,
    /// Why not active.
    pub status_reason: Option<String>,
    /// Derived endpoint (active entries only).
    pub endpoint: Option<String>,
    /// `:e:` commitment.
    pub encrypted: bool,
    /// Repo from the commitment or the file.
    pub repo: Option<String>,
    /// Revision from the commitment or the file.
    pub revision: Option<String>,
}

/// A parsed miner commitment (docs/scheduler.md §10.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commitment {
    /// `<repo>:<revision>:<deployment_id>`.
    Plain {
        /// HuggingFace repo.
        repo: String,
        /// Revision, not truncated.
        revision: String,
        /// Deployment id, not yet validated.
        deployment_id: String,
    },
    /// `<repo>:<revision>:e:<blob>`.
    Encrypted {
        /// HuggingFace repo.
        repo: String,
        /// Revision.
        revision: String,
        /// Base85 package.
        blob: String,
    },
}

/// Parses commitment text (split at the first three colons).
pub fn parse_commitment(text: &str) -> Result<Commitment, String> {
    let parts: Vec<&str> = text.splitn(4, ':').collect();
    if parts.len() < 3 {
        return Err("expected <repo>:<revision>:<deployment>".into());
    }
    let (repo, revision) = (parts[0], parts[1]);
    if repo.is_empty() || revision.is_empty() {
        return Err("repo and revision must not be empty".into());
    }
    if repo.chars().count() > 256 {
        return Err("repo is longer than 256 characters".into());
    }
    if revision.chars().count() > 64 {
        return Err("revision is longer than 64 characters".into());
    }
    if parts[2] == "e" && parts.len() == 4 {
        if parts[3].is_empty() {
            return Err("empty encrypted deployment id".into());
        }
        return Ok(Commitment::Encrypted {
            repo: repo.into(),
            revision: revision.into(),
            blob: parts[3].into(),
        });
    }
    if parts.len() == 4 {
        return Err("unexpected ':' in deployment id".into());
    }
    if parts[2].is_empty() {
        return Err("empty deployment id".into());
    }
    Ok(Commitment::Plain {
        repo: repo.into(),
        revision: revision.into(),
        deployment_id: parts[2].into(),
    })
}

/// A deployment id accepted by docs/scheduler.md §5.1 (a UUID or a DNS label), lowercased.
pub fn valid_deployment_id(id: &str) -> Option<String> {
    let is_uuid = id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let is_label = (1..=63).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    (is_uuid || is_label).then(|| id.to_ascii_lowercase())
}

/// The endpoint of a deployment (docs/scheduler.md §5.2).
pub fn deployment_endpoint(deployment_id: &str) -> String {
    format!("https://{deployment_id}.deployments.basilica.ai")
}

/// Validates a full-URL endpoint of the miners file (docs/scheduler.md §5.3); one trailing `/` is
/// removed.
pub fn validate_endpoint_url(raw: &str) -> Result<String, String> {
    if raw.len() > 2048 {
        return Err("endpoint: too long".into());
    }
    let url = url::Url::parse(raw).map_err(|_| "endpoint: not a valid URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("endpoint: scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("endpoint: not a valid URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint: credentials are not allowed".into());
    }
    if url.query().is_some() {
        return Err("endpoint: query strings are not allowed".into());
    }
    if url.fragment().is_some() {
        return Err("endpoint: fragments are not allowed".into());
    }
    let text = url.as_str();
    Ok(text.strip_suffix('/').unwrap_or(text).to_string())
}

/// Whether the text is the operator's public-key commitment (docs/scheduler.md §10.2).
pub fn is_operator_public_key(text: &str) -> bool {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let s = |k: &str| o.get(k).and_then(|v| v.as_str());
    (s("t") == Some("pk") && s("k").is_some())
        || (s("type") == Some("backend_pubkey") && s("key").is_some())
}

/// Decrypts an encrypted commitment's blob to a deployment id, or says why not.
pub type Decryptor<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Classifies one entry (docs/scheduler.md §5, first matching rule wins). `decrypt` is `None` when
/// no backend private key is loaded.
pub fn classify(entry: MinerEntry, decrypt: Option<Decryptor<'_>>) -> ClassifiedMiner {
    use MinerStatus::*;
    let mut out = ClassifiedMiner {
        repo: entry.repo.clone(),
        revision: entry.revision.clone(),
        entry,
        status: Inactive,
        status_reason: None,
        endpoint: None,
        encrypted: false,
    };
    let verdict = |out: &mut ClassifiedMiner, status, reason: Option<String>| {
        out.status = status;
        out.status_reason = reason;
    };
    if let Some(url) = out.entry.endpoint_override.clone() {
        match validate_endpoint_url(&url) {
            Ok(u) => {
                out.endpoint = Some(u);
                verdict(&mut out, Active, None);
            }
            Err(e) => verdict(&mut out, InvalidCommitment, Some(e)),
        }
        return out;
    }
    let Some(text) = out.entry.commitment.clone() else {
        verdict(&mut out, Inactive, Some("no commitment".into()));
        return out;
    };
    if text.starts_with('{') {
        let reason = if is_operator_public_key(&text) {
            "operator public-key commitment"
        } else {
            "JSON commitments are not supported"
        };
        verdict(&mut out, InvalidCommitment, Some(reason.into()));
        return out;
    }
    let parsed = match parse_commitment(&text) {
        Ok(c) => c,
        Err(e) => {
            verdict(
                &mut out,
                InvalidCommitment,
                Some(format!("malformed commitment: {e}")),
            );
            return out;
        }
    };
    let deployment = match parsed {
        Commitment::Plain {
            repo,
            revision,
            deployment_id,
        } => {
            out.repo = Some(repo);
            out.revision = Some(revision);
            deployment_id
        }
        Commitment::Encrypted {
            repo,
            revision,
            blob,
        } => {
            out.repo = Some(repo);
            out.revision = Some(revision);
            out.encrypted = true;
            let Some(decrypt) = decrypt else {
                verdict(
                    &mut out,
                    Inactive,
                    Some("encrypted commitment but no backend private key configured".into()),
                );
                return out;
            };
            match decrypt(&blob) {
                Ok(id) => id,
                Err(e) => {
                    verdict(&mut out, InvalidCommitment, Some(e));
                    return out;
                }
            }
        }
    };
    match valid_deployment_id(&deployment) {
        Some(id) => {
            out.endpoint = Some(deployment_endpoint(&id));
            verdict(&mut out, Active, None);
        }
        None => verdict(
            &mut out,
            InvalidCommitment,
            Some("deployment id is neither a UUID nor a DNS label".into()),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(commitment: Option<&str>, endpoint: Option<&str>) -> MinerEntry {
        MinerEntry {
            uid: 1,
            hotkey: "hk".into(),
            commitment: commitment.map(String::from),
            endpoint_override: endpoint.map(String::from),
            commit_block: Some(5),
            repo: None,
            revision: None,
        }
    }

    fn verdict(c: Option<&str>, e: Option<&str>) -> (MinerStatus, Option<String>, Option<String>) {
        let m = classify(
            entry(c, e),
            Some(&|b: &str| {
                if b == "good" {
                    Ok("95EDF2B6-e18b-400a-8398-5573df10e5e4".to_string())
                } else {
                    Err("Decryption failed (invalid key or tampered data): tag".to_string())
                }
            }),
        );
        (m.status, m.status_reason, m.endpoint)
    }

    #[test]
    fn parsing_examples() {
        assert_eq!(
            parse_commitment("user/policy:abc123:95edf2b6-e18b-400a-8398-5573df10e5e4").unwrap(),
            Commitment::Plain {
                repo: "user/policy".into(),
                revision: "abc123".into(),
                deployment_id: "95edf2b6-e18b-400a-8398-5573df10e5e4".into()
            }
        );
        assert!(
            matches!(parse_commitment("user/policy:abc123def456:e:b:l:o:b").unwrap(), Commitment::Encrypted { blob, revision, .. } if blob == "b:l:o:b" && revision == "abc123def456")
        );
        assert_eq!(
            parse_commitment("a:b").unwrap_err(),
            "expected <repo>:<revision>:<deployment>"
        );
        assert_eq!(
            parse_commitment("a:b:c:d").unwrap_err(),
            "unexpected ':' in deployment id"
        );
    }

    #[test]
    fn classification_rules_in_order() {
        use MinerStatus::*;
        let uuid = "95edf2b6-e18b-400a-8398-5573df10e5e4";
        assert_eq!(
            verdict(None, None),
            (Inactive, Some("no commitment".into()), None)
        );
        assert_eq!(
            verdict(None, Some("http://127.0.0.1:8001/")),
            (Active, None, Some("http://127.0.0.1:8001".into()))
        );
        assert_eq!(
            verdict(None, Some("http://h/x?y=1")).1.unwrap(),
            "endpoint: query strings are not allowed"
        );
        assert_eq!(
            verdict(None, Some("ftp://h/")).1.unwrap(),
            "endpoint: scheme must be http or https"
        );
        assert_eq!(
            verdict(None, Some("http://u:p@h/")).1.unwrap(),
            "endpoint: credentials are not allowed"
        );
        assert_eq!(
            verdict(None, Some("http://h/#f")).1.unwrap(),
            "endpoint: fragments are not allowed"
        );
        assert_eq!(
            verdict(None, Some("not a url")).1.unwrap(),
            "endpoint: not a valid URL"
        );
        assert_eq!(
            verdict(Some(r#"{"t":"pk","k":"00"}"#), None).1.unwrap(),
            "operator public-key commitment"
        );
        assert_eq!(
            verdict(Some(r#"{"type":"backend_pubkey","key":"00"}"#), None)
                .1
                .unwrap(),
            "operator public-key commitment"
        );
        assert_eq!(
            verdict(Some(r#"{"x":1}"#), None).1.unwrap(),
            "JSON commitments are not supported"
        );
        assert_eq!(
            verdict(Some("nocolons"), None).1.unwrap(),
            "malformed commitment: expected <repo>:<revision>:<deployment>"
        );
        let no_key = classify(entry(Some("r:v:e:blob"), None), None);
        assert_eq!((no_key.status, no_key.encrypted), (Inactive, true));
        assert_eq!(
            no_key.status_reason.unwrap(),
            "encrypted commitment but no backend private key configured"
        );
        assert_eq!(verdict(Some("r:v:e:bad"), None).0, InvalidCommitment);
        assert_eq!(
            verdict(Some("r:v:e:good"), None),
            (
                Active,
                None,
                Some(format!("https://{uuid}.deployments.basilica.ai"))
            )
        );
        for injected in [
            "evil.com/x",
            "a.b",
            "http://x",
            "-lead",
            "x?y",
            "a@b",
            "",
            &"a".repeat(64),
        ] {
            let (s, r, _) = verdict(Some(&format!("r:v:{injected}")), None);
            assert_eq!(s, InvalidCommitment, "{injected}");
            assert!(r.unwrap().contains("deployment id") || injected.is_empty());
        }
        assert_eq!(
            verdict(Some("r:v:My-Label-7"), None).2.unwrap(),
            "https://my-label-7.deployments.basilica.ai"
        );
        let m = classify(
            entry(Some(&format!("user/policy:abc123de:{uuid}")), None),
            None,
        );
        assert_eq!(
            (m.repo.as_deref(), m.revision.as_deref()),
            (Some("user/policy"), Some("abc123de"))
        );
    }
}
