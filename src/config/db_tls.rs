//! The TLS settings of a database URL (docs/database.md §1.1): `sslmode` and `sslrootcert`, which the
//! PostgreSQL driver does not understand in full (it knows neither `verify-ca`/`verify-full` nor
//! `sslrootcert`), so they are taken out of the URL here and applied by `crate::db::tls`.

use std::path::PathBuf;

/// `sslmode` of a database URL, with libpq's meanings except where docs/database.md §1.1 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verifying its certificate; plain otherwise (default).
    Prefer,
    /// TLS or no connection; the certificate is not verified (encryption without authentication).
    Require,
    /// TLS with a certificate chain that verifies against the trusted roots; any host name.
    VerifyCa,
    /// TLS with a certificate that verifies against the trusted roots and names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(match raw {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "invalid database URL: sslmode {other:?} is not one of disable, prefer, \
                     require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// Whether the server's certificate is checked against the trusted roots.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// The TLS settings of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    /// `sslmode`, `prefer` when absent.
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of roots trusted besides the system's (`system` or absent: none).
    pub root_cert: Option<PathBuf>,
}

/// Splits a `postgresql://` URL into the URL without `sslmode` and `sslrootcert` (for the driver) and
/// its TLS settings. The query starts at the first `?` after the credentials, as the driver reads it.
pub fn split(url: &str) -> Result<(String, DbTls), String> {
    let mut tls = DbTls {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let after_credentials = url.find('@').map_or(0, |i| i + 1);
    let Some(q) = url[after_credentials..]
        .find('?')
        .map(|i| after_credentials + i)
    else {
        return Ok((url.to_string(), tls));
    };
    let mut kept = Vec::new();
    for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|e| format!("invalid database URL: {key}: {e}"))
        };
        match key {
            "sslmode" => tls.mode = SslMode::parse(&decoded()?)?,
            "sslrootcert" => {
                let path = decoded()?;
                tls.root_cert = (path != "system" && !path.is_empty()).then(|| path.into());
            }
            _ => kept.push(pair),
        }
    }
    let mut rest = url[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        let (rest, tls) = split(
            "postgresql://k:p?w@db.example/kin?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://k:p?w@db.example/kin?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, tls) = split("postgresql://db.example/kin?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode, tls.root_cert),
            ("postgresql://db.example/kin", SslMode::Require, None)
        );
        let (rest, tls) = split("postgresql://db.example/kin?sslrootcert=system").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode, tls.root_cert),
            ("postgresql://db.example/kin", SslMode::Prefer, None)
        );
        let e = split("postgresql://db.example/kin?sslmode=allow").unwrap_err();
        assert!(e.contains("sslmode \"allow\" is not one of"), "{e}");
    }
}
