//! `kinitro crypto` commands (docs/configuration.md §3.8, docs/scheduler.md §10) and the
//! scheduler's use of the backend key.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{kinitro, stderr, stdout};

const ID: &str = "95edf2b6-e18b-400a-8398-5573df10e5e4";

/// `kinitro crypto … -f -` (or `-k -`) with the key on stdin.
fn with_key_on_stdin(args: &[&str], key: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args(args)
        .env("KINITRO_LOG_FORMAT", "text")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Issue 23 item 15: private keys come from a file or stdin; the deprecated inline form still works
/// (the contract names it) but warns.
#[test]
fn private_keys_come_from_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = kinitro(&["crypto", "generate-keypair", "-o", d, "-n", "op"], &[]);
    let public = stdout(&o).trim().to_string();
    let file = dir.path().join("op");
    let private = std::fs::read_to_string(&file).unwrap();
    for flag in ["-f", "--private-key-file", "--key-file", "-k"] {
        let o = with_key_on_stdin(&["crypto", "show-public-key", flag, "-"], &private);
        assert!(o.status.success(), "{flag} -: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), public, "{flag} -");
        assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    }
    let o = kinitro(
        &[
            "crypto",
            "show-public-key",
            "--key-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(stdout(&o).trim(), public);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let o = kinitro(&["crypto", "show-public-key", "-k", private.trim()], &[]);
    assert_eq!(stdout(&o).trim(), public);
    assert!(
        stderr(&o).contains("warning: a private key on the command line is visible"),
        "{}",
        stderr(&o)
    );
    let o = kinitro(&["crypto", "show-public-key"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--private-key-file PATH (or - for stdin)"),
        "{}",
        stderr(&o)
    );
}

/// Issue 23 item 7: a random API key long enough for the API.
#[test]
fn generate_api_key_prints_64_random_hex_characters() {
    let key = || {
        let o = kinitro(&["crypto", "generate-api-key"], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    let (a, b) = (key(), key());
    assert_eq!(a.len(), 64, "{a}");
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(a, b);
}

#[test]
fn keys_encryption_and_commitments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = kinitro(&["crypto", "generate-keypair", "-o", d, "-n", "op"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public = stdout(&o).trim().to_string();
    assert_eq!(public.len(), 64);
    let private_path = dir.path().join("op");
    assert_eq!(
        std::fs::metadata(&private_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("op.pub")).unwrap(),
        public
    );
    let o = kinitro(&["crypto", "generate-keypair", "-o", d, "-n", "op"], &[]);
    assert_eq!(o.status.code(), Some(1), "never overwrites without --force");

    let o = kinitro(
        &[
            "crypto",
            "show-public-key",
            "-f",
            private_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(stdout(&o).trim(), public);

    let o = kinitro(&["crypto", "encrypt", "-d", ID, "-p", &public], &[]);
    let blob = stdout(&o).trim().to_string();
    assert_eq!(blob.len(), 80);
    let private_file = private_path.to_str().unwrap();
    let o = kinitro(
        &["crypto", "decrypt", "--blob", &blob, "-f", private_file],
        &[],
    );
    assert_eq!(stdout(&o).trim(), ID);

    let o = kinitro(
        &[
            "crypto",
            "make-commitment",
            "--repo",
            "user/policy",
            "--revision",
            "abc123def456",
            "-d",
            ID,
            "--encrypt",
            "-p",
            &public,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let commitment = stdout(&o).trim().to_string();
    assert!(
        commitment.starts_with("user/policy:abc123de:e:") && commitment.len() <= 128,
        "{commitment}"
    );
    let o = kinitro(
        &[
            "crypto",
            "decrypt",
            "--commitment",
            &commitment,
            "-f",
            private_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(stdout(&o).trim(), ID);
    let o = kinitro(
        &[
            "crypto",
            "make-commitment",
            "--repo",
            "user/policy",
            "--revision",
            "abc123def456",
            "-d",
            ID,
        ],
        &[],
    );
    assert_eq!(stdout(&o).trim(), format!("user/policy:abc123de:{ID}"));
    let o = kinitro(
        &[
            "crypto",
            "make-commitment",
            "--repo",
            &"r".repeat(100),
            "--revision",
            "abc",
            "-d",
            ID,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the chain limit is 128"),
        "{}",
        stderr(&o)
    );
    let o = kinitro(
        &[
            "crypto",
            "make-commitment",
            "--repo",
            "a:b",
            "--revision",
            "abc",
            "-d",
            ID,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));

    let o = kinitro(
        &[
            "crypto",
            "decrypt",
            "--commitment",
            &format!("user/policy:abc123de:{ID}"),
            "-f",
            private_file,
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a plain commitment is an error naming it"
    );
    let other = kinitro(&["crypto", "generate-keypair", "-o", d, "-n", "other"], &[]);
    assert!(other.status.success());
    let o = kinitro(
        &[
            "crypto",
            "decrypt",
            "--blob",
            &blob,
            "-f",
            dir.path().join("other").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Decryption failed (invalid key or tampered data)"),
        "{}",
        stderr(&o)
    );

    let o = kinitro(&["crypto", "test-encryption", "-f", private_file], &[]);
    assert!(stdout(&o).contains("round trip: ok"), "{}", stdout(&o));
    let o = kinitro(&["crypto", "publish-public-key", "-f", private_file], &[]);
    assert_eq!(stdout(&o).trim(), format!(r#"{{"t":"pk","k":"{public}"}}"#));
    let o = kinitro(&["crypto", "encrypt", "-d", "abc123", "-p", &public], &[]);
    assert_eq!(stderr(&o).trim(), "error: Invalid UUID format: abc123");
    let o = kinitro(&["crypto", "encrypt", "-d", ID, "-p", "abcd1234"], &[]);
    assert_eq!(
        stderr(&o).trim(),
        "error: Invalid public key length: 4 (expected 32)"
    );
}
