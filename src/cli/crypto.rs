//! `kinitro crypto …` (docs/configuration.md §3.8): backend keys, encrypted deployment ids and
//! commitment strings.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use kinitro_actors::registry::{is_operator_public_key, parse_commitment, Commitment};

use super::{CommandResult, Failure};
use crate::chain::client::ChainSource;
use crate::chain::crypto::{decrypt_deployment_id, encrypt_deployment_id, parse_key, public_key};
use crate::config::xdg_dir;

/// The example deployment id of `test-encryption`.
const DEFAULT_DEPLOYMENT: &str = "95edf2b6-e18b-400a-8398-5573df10e5e4";
/// The chain's limit for one `Raw` commitment field.
const COMMITMENT_LIMIT: usize = 128;

/// A private key read from a file or stdin (issue 23 item 15: a key on the command line is visible
/// to every local user in ps and /proc, and stays in the shell history).
#[derive(Debug, Args)]
pub struct PrivateKeyArgs {
    /// Deprecated: private key, 64 hex characters, on the command line (visible to other local
    /// users); `-` reads it from stdin. Prefer --private-key-file
    #[arg(short = 'k', long, conflicts_with = "private_key_file")]
    pub private_key: Option<String>,
    /// File holding the private key (hex; surrounding whitespace ignored), `-` for stdin
    #[arg(short = 'f', long, visible_alias = "key-file")]
    pub private_key_file: Option<PathBuf>,
}

/// The key text on stdin.
fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| Failure::runtime(format!("cannot read the private key from stdin: {e}")))?;
    Ok(text)
}

impl PrivateKeyArgs {
    fn load(&self) -> Result<Option<[u8; 32]>, Failure> {
        let text = match (&self.private_key, &self.private_key_file) {
            (Some(k), _) if k == "-" => read_stdin()?,
            (Some(k), _) => {
                eprintln!(
                    "warning: a private key on the command line is visible to other local users (ps, /proc) \
                     and kept in the shell history; use --private-key-file PATH, or - for stdin"
                );
                k.clone()
            }
            (None, Some(p)) if p.as_os_str() == "-" => read_stdin()?,
            (None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", p.display())))?,
            (None, None) => return Ok(None),
        };
        parse_key(&text, "private")
            .map(Some)
            .map_err(Failure::runtime)
    }

    fn require(&self) -> Result<[u8; 32], Failure> {
        self.load()?.ok_or_else(|| {
            Failure::usage("a private key is required: --private-key-file PATH (or - for stdin)")
        })
    }
}

/// `kinitro crypto` commands.
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Generate the backend's X25519 key pair (private file mode 0600)
    GenerateKeypair {
        /// Directory [default: $XDG_CONFIG_HOME/kinitro/keys]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Key name
        #[arg(short, long, default_value = "backend")]
        name: String,
        /// Overwrite existing files
        #[arg(short, long)]
        force: bool,
    },
    /// Print a random API key (64 hex characters, 256 bits) for KINITRO_API_API_KEY
    GenerateApiKey,
    /// Print the public key of a private key
    ShowPublicKey(PrivateKeyArgs),
    /// Encrypt a deployment UUID for a backend public key
    Encrypt {
        /// Deployment UUID
        #[arg(short, long)]
        deployment_id: String,
        /// Backend public key, 64 hex characters
        #[arg(short, long)]
        public_key: String,
    },
    /// Decrypt a blob or a full encrypted commitment
    Decrypt {
        /// The 80-character blob
        #[arg(
            long,
            conflicts_with = "commitment",
            required_unless_present = "commitment"
        )]
        blob: Option<String>,
        /// A full `repo:rev:e:<blob>` commitment
        #[arg(long)]
        commitment: Option<String>,
        /// Key options.
        #[command(flatten)]
        key: PrivateKeyArgs,
    },
    /// Encrypt (and, with a private key, decrypt) a deployment id and report the round trip
    TestEncryption {
        /// Deployment UUID
        #[arg(short, long, default_value = DEFAULT_DEPLOYMENT)]
        deployment_id: String,
        /// Backend public key (derived from the private key when absent)
        #[arg(short, long)]
        public_key: Option<String>,
        /// Key options.
        #[command(flatten)]
        key: PrivateKeyArgs,
    },
    /// Build a commitment string
    MakeCommitment {
        /// HuggingFace repo
        #[arg(long)]
        repo: String,
        /// Revision (its first 8 characters are committed)
        #[arg(long)]
        revision: String,
        /// Deployment id
        #[arg(short, long)]
        deployment_id: String,
        /// Encrypt the deployment id
        #[arg(long, requires = "public_key")]
        encrypt: bool,
        /// Backend public key (with --encrypt)
        #[arg(short, long)]
        public_key: Option<String>,
    },
    /// Print the JSON commitment that publishes the backend public key
    PublishPublicKey(PrivateKeyArgs),
    /// Read a backend's public key from the chain (`--netuid` required)
    FetchPublicKey {
        /// Backend hotkey
        #[arg(short, long)]
        backend_hotkey: String,
        /// Network
        #[arg(long)]
        network: Option<String>,
        /// Subnet uid
        #[arg(long)]
        netuid: Option<u16>,
    },
}

fn write_new(path: &std::path::Path, text: &str, mode: u32, force: bool) -> Result<(), Failure> {
    if path.exists() && !force {
        return Err(Failure::runtime(format!(
            "{} exists; pass --force to overwrite",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(Failure::runtime)
}

/// Runs one crypto command.
pub fn execute(cmd: CryptoCommand) -> CommandResult {
    match cmd {
        CryptoCommand::GenerateKeypair {
            output,
            name,
            force,
        } => {
            let dir = output
                .unwrap_or_else(|| xdg_dir("XDG_CONFIG_HOME", ".config").join("kinitro/keys"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
            let private: [u8; 32] = rand::random();
            let public = hex::encode(public_key(&private));
            let (priv_path, pub_path) = (dir.join(&name), dir.join(format!("{name}.pub")));
            for p in [&priv_path, &pub_path] {
                if p.exists() && !force {
                    return Err(Failure::runtime(format!(
                        "{} exists; pass --force to overwrite",
                        p.display()
                    )));
                }
            }
            write_new(&priv_path, &hex::encode(private), 0o600, force)?;
            write_new(&pub_path, &public, 0o644, force)?;
            println!("{public}");
            eprintln!(
                "private key: {}\npublic key:  {}\nnext: set KINITRO_SCHEDULER_BACKEND_PRIVATE_KEY_FILE={} and publish the \
                 public key with `kinitro crypto publish-public-key --private-key-file {}`",
                priv_path.display(),
                pub_path.display(),
                priv_path.display(),
                priv_path.display()
            );
        }
        CryptoCommand::GenerateApiKey => {
            let key: [u8; 32] = rand::random();
            println!("{}", hex::encode(key));
        }
        CryptoCommand::ShowPublicKey(key) => {
            println!("{}", hex::encode(public_key(&key.require()?)))
        }
        CryptoCommand::Encrypt {
            deployment_id,
            public_key: pk,
        } => {
            let pk = parse_key(&pk, "public").map_err(Failure::runtime)?;
            println!(
                "{}",
                encrypt_deployment_id(&pk, &deployment_id).map_err(Failure::runtime)?
            );
        }
        CryptoCommand::Decrypt {
            blob,
            commitment,
            key,
        } => {
            let private = key.require()?;
            let blob = match (blob, commitment) {
                (Some(b), _) => b,
                (None, Some(c)) => match parse_commitment(&c) {
                    Ok(Commitment::Encrypted { blob, .. }) => blob,
                    Ok(Commitment::Plain { .. }) => {
                        return Err(Failure::runtime(format!(
                            "not an encrypted commitment: {c}"
                        )))
                    }
                    Err(e) => return Err(Failure::runtime(format!("malformed commitment: {e}"))),
                },
                (None, None) => unreachable!("clap requires one"),
            };
            println!(
                "{}",
                decrypt_deployment_id(&private, &blob).map_err(Failure::runtime)?
            );
        }
        CryptoCommand::TestEncryption {
            deployment_id,
            public_key: pk,
            key,
        } => {
            let private = key.load()?;
            let public = match (pk, private) {
                (Some(p), _) => parse_key(&p, "public").map_err(Failure::runtime)?,
                (None, Some(k)) => public_key(&k),
                (None, None) => return Err(Failure::usage("give --public-key or a private key")),
            };
            let blob = encrypt_deployment_id(&public, &deployment_id).map_err(Failure::runtime)?;
            println!("blob: {blob}\nlength: {}", blob.len());
            if let Some(k) = private {
                let back = decrypt_deployment_id(&k, &blob).map_err(Failure::runtime)?;
                let ok = back == deployment_id.to_ascii_lowercase();
                println!(
                    "decrypted: {back}\nround trip: {}",
                    if ok { "ok" } else { "MISMATCH" }
                );
                if !ok {
                    return Err(Failure::runtime("round trip mismatch"));
                }
            }
        }
        CryptoCommand::MakeCommitment {
            repo,
            revision,
            deployment_id,
            encrypt,
            public_key: pk,
        } => {
            let rev8: String = revision.chars().take(8).collect();
            for (what, v) in [
                ("repo", &repo),
                ("revision", &rev8),
                ("deployment id", &deployment_id),
            ] {
                if v.contains(':') {
                    return Err(Failure::usage(format!("the {what} must not contain ':'")));
                }
            }
            let text = if encrypt {
                let pk = parse_key(pk.as_deref().unwrap_or_default(), "public")
                    .map_err(Failure::usage)?;
                let blob = encrypt_deployment_id(&pk, &deployment_id).map_err(Failure::usage)?;
                format!("{repo}:{rev8}:e:{blob}")
            } else {
                format!("{repo}:{rev8}:{deployment_id}")
            };
            if text.len() > COMMITMENT_LIMIT {
                return Err(Failure::usage(format!(
                    "commitment is {} bytes, the chain limit is {COMMITMENT_LIMIT}",
                    text.len()
                )));
            }
            println!("{text}");
            eprintln!("{} bytes", text.len());
        }
        CryptoCommand::PublishPublicKey(key) => {
            let text = format!(
                r#"{{"t":"pk","k":"{}"}}"#,
                hex::encode(public_key(&key.require()?))
            );
            println!("{text}");
            eprintln!(
                "{} bytes: commit this text for the operator hotkey (Commitments.set_commitment)",
                text.len()
            );
        }
        CryptoCommand::FetchPublicKey {
            backend_hotkey,
            network,
            netuid,
        } => {
            let network = network.unwrap_or_else(|| "finney".into());
            let netuid = netuid.ok_or_else(|| Failure::usage("--netuid is required"))?;
            let text = actix_web::rt::System::new().block_on(async {
                let mut chain =
                    ChainSource::new(&network, netuid, std::time::Duration::from_secs(30))
                        .map_err(Failure::usage)?;
                chain
                    .commitment_of(&backend_hotkey)
                    .await
                    .map_err(Failure::runtime)
            })?;
            let no_key = || {
                Failure::runtime(format!(
                    "no backend public key committed by {backend_hotkey}"
                ))
            };
            let text = text
                .filter(|t| is_operator_public_key(t))
                .ok_or_else(no_key)?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| no_key())?;
            let key = json
                .get("k")
                .or_else(|| json.get("key"))
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if key.len() != 64 || hex::decode(key).is_err() {
                return Err(Failure::runtime("invalid backend public key"));
            }
            println!("{}", key.to_ascii_lowercase());
        }
    }
    Ok(())
}
