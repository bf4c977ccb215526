//! The address guard (docs/executor.md §8): miner endpoints come from untrusted commitments, so
//! hosts resolving to loopback, private, link-local, multicast or other non-public addresses are
//! refused, including IPv6 forms that reach them through an embedded IPv4 address
//! (issue 23 item 11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Resolution timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an IPv4 address is public (not in any range of docs/executor.md §8).
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
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return public_v4(v4(s[6], s[7]));
    }
    // 6to4 2002::/16: the relay delivers to the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return public_v4(v4(s[1], s[2]));
    }
    !(s[0..6] == [0, 0, 0, 0, 0, 0] // ::/96: `::`, `::1` and the deprecated IPv4-compatible addresses
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48, local-use NAT64
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, deprecated site-local
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

/// Whether the guard admits `ip`: public, or loopback when `allow_loopback` (the verification
/// Hub in tests, docs/verification.md §2).
pub fn admitted(ip: IpAddr, allow_loopback: bool) -> bool {
    public(ip) || (allow_loopback && ip.to_canonical().is_loopback())
}

/// awc's resolver with the guard: resolves a host (within [`RESOLVE_TIMEOUT`]) and refuses it when
/// any answer is not [`admitted`], so a connection only ever reaches addresses checked here (a DNS
/// answer that changes after an earlier check cannot reach inward).
pub struct GuardedResolver {
    /// Admit loopback answers too.
    pub allow_loopback: bool,
}

impl actix_tls::connect::Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::LocalBoxFuture<
        'a,
        Result<Vec<std::net::SocketAddr>, Box<dyn std::error::Error>>,
    > {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                    .await
                    .map_err(|_| format!("cannot resolve {host}: timeout"))??
                    .collect();
            if let Some(bad) = addrs
                .iter()
                .find(|a| !admitted(a.ip(), self.allow_loopback))
            {
                return Err(
                    format!("{host} resolves to a non-public address ({})", bad.ip()).into(),
                );
            }
            if addrs.is_empty() {
                return Err(format!("cannot resolve {host}: no address").into());
            }
            Ok(addrs)
        })
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

    #[test]
    fn issue_23_ranges() {
        for bad in [
            "::a00:1",
            "::8.8.8.8",
            "::ffff",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            "2002::1",
            "fec0::1",
            "feff::1",
        ] {
            assert!(!public(bad.parse().unwrap()), "{bad} must be refused");
        }
        for good in ["2002:808:808::1", "64:ff9b:2::1", "fe00::1"] {
            assert!(public(good.parse().unwrap()), "{good} is public");
        }
    }

    /// An IPv6 address: `prefix_len` leading bits of `prefix`, the rest from `rest`.
    fn in_prefix(prefix: u128, prefix_len: u32, rest: u128) -> Ipv6Addr {
        let mask = u128::MAX.checked_shl(128 - prefix_len).unwrap_or(0);
        Ipv6Addr::from((prefix & mask) | (rest & !mask))
    }

    proptest::proptest! {
        #[test]
        fn every_address_of_a_refused_v6_range_is_refused(rest: u128, which in 0usize..10) {
            let (prefix, len) = [
                (0u128, 96),                          // ::/96 (IPv4-compatible, ::, ::1)
                (0x0064_ff9b_0001u128 << 80, 48),     // 64:ff9b:1::/48
                (0xfec0u128 << 112, 10),              // fec0::/10
                (0xfc00u128 << 112, 7),               // fc00::/7
                (0xfe80u128 << 112, 10),              // fe80::/10
                (0xff00u128 << 112, 8),               // ff00::/8
                (0x2001_0db8u128 << 96, 32),          // 2001:db8::/32
                (0x0100u128 << 112, 64),              // 100::/64
                (0xffff_0a00_0000u128, 104),         // ::ffff:10.0.0.0/104 (IPv4-mapped)
                (0x0064_ff9b_0000_0000_0000_0000_0a00_0000, 104), // 64:ff9b::10.0.0.0/104
            ][which];
            let ip = in_prefix(prefix, len, rest);
            proptest::prop_assert!(!public_v6(ip), "{ip} must be refused");
        }

        #[test]
        fn a_6to4_address_is_judged_by_its_ipv4_address(v4: u32, rest: u128) {
            let ip = in_prefix((0x2002u128 << 112) | (u128::from(v4) << 80), 48, rest);
            proptest::prop_assert_eq!(public_v6(ip), public_v4(Ipv4Addr::from(v4)), "{}", ip);
        }

        #[test]
        fn embedded_ipv4_is_judged_as_ipv4(v4: u32) {
            let v4 = Ipv4Addr::from(v4);
            proptest::prop_assert_eq!(public_v6(v4.to_ipv6_mapped()), public_v4(v4));
            let nat64 = in_prefix(0x0064_ff9b_0000u128 << 80, 96, u128::from(u32::from(v4)));
            proptest::prop_assert_eq!(public_v6(nat64), public_v4(v4));
            // IPv4-compatible (::a.b.c.d) is refused whatever the IPv4 address.
            proptest::prop_assert!(!public_v6(v4.to_ipv6_compatible()));
        }

        #[test]
        fn global_unicast_outside_the_special_ranges_is_public(rest: u128) {
            // 2000::/3 without 2001:db8::/32 (documentation) and 2002::/16 (6to4, judged above).
            let ip = in_prefix(0x2000u128 << 112, 3, rest);
            let s = ip.segments();
            proptest::prop_assume!(!(s[0] == 0x2001 && s[1] == 0x0db8) && s[0] != 0x2002);
            proptest::prop_assert!(public_v6(ip), "{ip} is public");
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
