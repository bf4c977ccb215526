//! Base85 with the RFC 1924 alphabet (docs/scheduler.md §10.3), the encoding of encrypted
//! deployment ids.

/// Digits 0…84.
pub const ALPHABET: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Encodes: 4 bytes → 5 digits, most significant first; a final partial group is zero-padded and the
/// surplus digits dropped.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(4) * 5);
    for chunk in data.chunks(4) {
        let mut group = [0u8; 4];
        group[..chunk.len()].copy_from_slice(chunk);
        let mut value = u32::from_be_bytes(group);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        out.extend(digits[..chunk.len() + 1].iter().map(|&b| b as char));
    }
    out
}

/// Decodes; a final partial group is padded with `~`, an overflowing group or a foreign character is
/// an error (`Invalid base85 encoding: …`).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 5 * 4 + 4);
    let bytes = text.as_bytes();
    for chunk in bytes.chunks(5) {
        if chunk.len() == 1 {
            return Err("Invalid base85 encoding: a final group of one digit".into());
        }
        let mut value: u64 = 0;
        for i in 0..5 {
            let c = chunk.get(i).copied().unwrap_or(b'~');
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| format!("Invalid base85 encoding: bad character {:?}", c as char))?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value)
            .map_err(|_| "Invalid base85 encoding: group overflows 32 bits".to_string())?;
        out.extend_from_slice(&value.to_be_bytes()[..chunk.len() - 1]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_errors() {
        for data in [
            &b""[..],
            b"\x00",
            b"hello",
            &[0xff; 64],
            &(0u8..=255).collect::<Vec<_>>(),
        ] {
            assert_eq!(decode(&encode(data)).unwrap(), data);
        }
        assert_eq!(encode(&[0; 4]), "00000");
        assert_eq!(encode(&[0xff; 4]), "|NsC0");
        assert!(
            decode("|NsC1")
                .unwrap_err()
                .starts_with("Invalid base85 encoding"),
            "2^32 overflows"
        );
        assert!(decode("ab\"cd")
            .unwrap_err()
            .starts_with("Invalid base85 encoding"));
        assert_eq!(encode(&[0u8; 64]).len(), 80);
    }
}
