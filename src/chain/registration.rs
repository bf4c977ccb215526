//! The raw-SCALE decoder of `Commitments.CommitmentOf` values (docs/scheduler.md §9.2): the
//! cross-check of the metadata-driven decoding and its fallback.

/// What the registry needs from a `Registration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Block of the commitment.
    pub block: u32,
    /// The first field as text when it is a `Raw` variant (invalid UTF-8 dropped), else `None`.
    pub commitment: Option<String>,
}

/// Decodes a SCALE compact integer, returning (value, bytes used).
fn compact(b: &[u8]) -> Result<(u64, usize), String> {
    let first = *b.first().ok_or("truncated compact length")?;
    match first & 0b11 {
        0 => Ok((u64::from(first >> 2), 1)),
        1 if b.len() >= 2 => Ok((u64::from(u16::from_le_bytes([b[0], b[1]]) >> 2), 2)),
        2 if b.len() >= 4 => Ok((
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 2),
            4,
        )),
        3 => {
            let n = usize::from(first >> 2) + 4;
            let bytes = b.get(1..1 + n).ok_or("truncated compact integer")?;
            let mut v = [0u8; 8];
            v[..n.min(8)].copy_from_slice(&bytes[..n.min(8)]);
            Ok((u64::from_le_bytes(v), 1 + n))
        }
        _ => Err("truncated compact length".into()),
    }
}

/// UTF-8 text with invalid sequences dropped (not replaced).
pub fn lossy_drop(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).expect("valid prefix"));
                rest = &bad[e.error_len().unwrap_or(bad.len())..];
            }
        }
    }
}

/// Decodes `deposit: u64, block: u32, info.fields: Vec<Data>` and the first `Data` value.
pub fn decode(bytes: &[u8]) -> Result<Registration, String> {
    let block_bytes = bytes
        .get(8..12)
        .ok_or("registration shorter than 12 bytes")?;
    let block = u32::from_le_bytes(block_bytes.try_into().expect("4 bytes"));
    let (fields, used) = compact(&bytes[12..])?;
    if fields == 0 {
        return Ok(Registration {
            block,
            commitment: None,
        });
    }
    let data = &bytes[12 + used..];
    let tag = *data.first().ok_or("truncated Data value")?;
    let commitment = match tag {
        1..=129 => {
            let n = usize::from(tag - 1);
            let raw = data.get(1..1 + n).ok_or("truncated Raw value")?;
            Some(lossy_drop(raw))
        }
        0 | 130..=136 => None,
        other => return Err(format!("unknown Data variant {other}")),
    };
    Ok(Registration { block, commitment })
}

/// The endpoint of a network name or URL (docs/scheduler.md §9.1).
pub fn network_url(network: &str) -> Result<String, String> {
    Ok(match network {
        "finney" => "wss://entrypoint-finney.opentensor.ai:443".into(),
        "test" => "wss://test.finney.opentensor.ai:443".into(),
        "archive" => "wss://archive.chain.opentensor.ai:443".into(),
        "local" => "ws://127.0.0.1:9944".into(),
        url if url.starts_with("ws://") || url.starts_with("wss://") => url.into(),
        other => {
            return Err(format!(
                "unknown network '{other}': use finney, test, archive, local or a ws(s):// URL"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(block: u32, fields: &[&[u8]]) -> Vec<u8> {
        let mut v = 5u64.to_le_bytes().to_vec();
        v.extend(block.to_le_bytes());
        v.push((fields.len() as u8) << 2);
        for f in fields {
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn decodes_raw_and_other_variants() {
        let mut raw = vec![1 + 5];
        raw.extend(b"a:b:c");
        assert_eq!(
            decode(&registration(77, &[&raw])).unwrap(),
            Registration {
                block: 77,
                commitment: Some("a:b:c".into())
            }
        );
        let mut big = vec![129];
        big.extend([b'x'; 128]);
        assert_eq!(
            decode(&registration(1, &[&big]))
                .unwrap()
                .commitment
                .unwrap()
                .len(),
            128
        );
        assert_eq!(
            decode(&registration(1, &[&[135]])).unwrap().commitment,
            None,
            "ResetBondsFlag"
        );
        assert_eq!(decode(&registration(1, &[])).unwrap().commitment, None);
        let invalid = [1 + 4, b'o', 0xff, b'k', 0xc3];
        assert_eq!(
            decode(&registration(1, &[&invalid]))
                .unwrap()
                .commitment
                .unwrap(),
            "ok"
        );
        assert!(decode(&[0; 5]).is_err());
    }

    #[test]
    fn networks() {
        assert_eq!(network_url("local").unwrap(), "ws://127.0.0.1:9944");
        assert_eq!(
            network_url("ws://127.0.0.1:1234").unwrap(),
            "ws://127.0.0.1:1234"
        );
        assert_eq!(
            network_url("mainnet").unwrap_err(),
            "unknown network 'mainnet': use finney, test, archive, local or a ws(s):// URL"
        );
    }
}
