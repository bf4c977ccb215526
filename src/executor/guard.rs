//! The address guard (executor.md 8): miner endpoints come from untrusted commitments, so hosts
//! resolving to loopback, private, link-local, multicast or other non-public addresses are refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Resolution timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an IPv4 address is public (not in any range of executor.md 8).
pub fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let (a, b, c) = (o[0], o[1], o[2]);
    !(a == 0
        || a == 10
        || (a == 100 && (64..128).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

/// Whether an IPv6 address is public (embedded IPv4 addresses are judged as IPv4).
pub fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xff00) == 0xff00
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]))
}

/// Whether an address is public.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

/// Checks a miner endpoint before an episode; the error is the episode's miner-failure string.
pub async fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<(), String> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("Miner endpoint refused: cannot resolve {endpoint}: {e}"))?;
    if allow_private {
        return Ok(());
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("Miner endpoint refused: cannot resolve {host}: timeout"))?
        .map_err(|e| format!("Miner endpoint refused: cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .collect(),
    };
    if let Some(bad) = addrs.iter().find(|ip| !public(**ip)) {
        if bad.is_loopback() {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                tracing::warn!("miner endpoint on a private address refused; set KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS=true for local miners")
            });
        }
        return Err(format!(
            "Miner endpoint refused: {host} resolves to a non-public address ({bad})"
        ));
    }
    if addrs.is_empty() {
        return Err(format!(
            "Miner endpoint refused: cannot resolve {host}: no address"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for bad in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.5",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!public(bad.parse().unwrap()), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(good.parse().unwrap()), "{good} is public");
        }
    }

    #[actix_web::test]
    async fn endpoint_checks() {
        let e = check_endpoint("http://127.0.0.1:9/", false)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            "Miner endpoint refused: 127.0.0.1 resolves to a non-public address (127.0.0.1)"
        );
        assert!(check_endpoint("http://127.0.0.1:9/", true).await.is_ok());
        let e = check_endpoint("http://localhost:9/", false)
            .await
            .unwrap_err();
        assert!(
            e.starts_with("Miner endpoint refused: localhost resolves to a non-public address"),
            "{e}"
        );
        let e = check_endpoint("http://[::1]:9/", false).await.unwrap_err();
        assert!(e.contains("(::1)"), "{e}");
    }
}
