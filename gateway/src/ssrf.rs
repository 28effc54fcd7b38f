//! The webhook SSRF guard: which addresses a webhook may reach, and a DNS
//! resolver for the delivery client that applies it.
//!
//! * **Only globally reachable addresses.** An address is first normalised:
//!   IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//!   IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//!   `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) are judged as that IPv4
//!   address. IPv4 then follows the IANA special-purpose registry (through the
//!   `ip_network` crate: private, shared 100.64/10, loopback, link-local,
//!   `192.0.0.0/24`, documentation, benchmarking 198.18/15, reserved 240/4,
//!   broadcast, "this network" 0/8), plus multicast; IPv6 follows the crate's
//!   unicast-global test (loopback, link-local, site-local, unique local,
//!   unspecified, documentation) plus the registry blocks it does not cover
//!   (discard `100::/64`, IETF protocol assignments `2001::/23` with Teredo,
//!   local-use NAT64 `64:ff9b:1::/48`, SRv6 `5f00::/16`) and all multicast.
//! * **Two escape hatches** for operators (and tests): `allow_loopback`
//!   (loopback only) and `allow_private` (RFC 1918, shared address space,
//!   link-local, unique local). Everything else non-global is always refused.
//! * **The address checked is the address connected to.** The delivery
//!   client resolves names through [`GuardedResolver`], which refuses a name
//!   if any of its addresses is refused and hands the connector only the
//!   addresses it checked, so a DNS answer that changes between the check and
//!   the connection (rebinding) cannot send a request elsewhere. Literal IP
//!   hosts are not resolved; they are checked by [`check_ip`] before sending.

use ip_network::{Ipv4Network, Ipv6Network};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Loopback,
    Private,
    NotGlobal,
}

impl Refusal {
    /// The words used in the API's error message.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::Private => "private or link-local",
            Refusal::NotGlobal => {
                "non-global (reserved, shared, documentation, benchmarking, multicast or unspecified)"
            }
        }
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated, RFC 6052 §2.1 SIIT).
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => Some(low),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        // ::a.b.c.d (IPv4-compatible, deprecated), but not :: and ::1.
        [0, 0, 0, 0, 0, 0, ..] if u32::from(low) > 1 => Some(low),
        // 2002:AABB:CCDD::/48 (6to4, RFC 3056).
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn classify_v4(v4: Ipv4Addr) -> Option<Refusal> {
    let o = v4.octets();
    if v4.is_loopback() {
        return Some(Refusal::Loopback);
    }
    if v4.is_private() || v4.is_link_local() || (o[0] == 100 && (64..128).contains(&o[1])) {
        return Some(Refusal::Private);
    }
    let global = Ipv4Network::new(v4, 32).is_ok_and(|n| n.is_global());
    if !global || v4.is_multicast() {
        return Some(Refusal::NotGlobal);
    }
    None
}

fn classify_v6(v6: Ipv6Addr) -> Option<Refusal> {
    let s = v6.segments();
    if v6.is_loopback() {
        return Some(Refusal::Loopback);
    }
    if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
        return Some(Refusal::Private);
    }
    let global = Ipv6Network::new(v6, 128).is_ok_and(|n| n.is_unicast_global());
    let special = matches!(s, [0x100, 0, 0, 0, ..]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23 (Teredo too)
        || matches!(s, [0x64, 0xff9b, 1, ..]) // local-use NAT64 64:ff9b:1::/48
        || s[0] == 0x5f00; // SRv6 SIDs 5f00::/16
    if !global || special || v6.is_multicast() {
        return Some(Refusal::NotGlobal);
    }
    None
}

/// Why `ip` may not be a webhook's address, if it may not (after
/// normalising the IPv6 forms that carry an IPv4 address).
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// `classify` with the operator's escape hatches applied.
pub fn check_ip(ip: IpAddr, allow_loopback: bool, allow_private: bool) -> Option<Refusal> {
    match classify(ip) {
        Some(Refusal::Loopback) if allow_loopback => None,
        Some(Refusal::Private) if allow_private => None,
        other => other,
    }
}

/// A resolver for the delivery client: every address of a name is checked,
/// and only checked addresses reach the connector.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let me = *self;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` does not resolve").into());
            }
            for a in &addrs {
                if let Some(r) = check_ip(a.ip(), me.allow_loopback, me.allow_private) {
                    return Err(format!(
                        "`{host}` resolves to {}, a {} address: webhook endpoints must be public",
                        a.ip(),
                        r.describe()
                    )
                    .into());
                }
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Refusal> {
        classify(s.parse().expect("ip"))
    }

    #[test]
    fn the_forms_from_issue_15_are_refused() {
        assert_eq!(c("::ffff:169.254.169.254"), Some(Refusal::Private));
        assert_eq!(c("::ffff:100.64.0.1"), Some(Refusal::Private));
        assert_eq!(c("64:ff9b::a9fe:a9fe"), Some(Refusal::Private));
        assert_eq!(c("198.18.0.1"), Some(Refusal::NotGlobal));
        assert_eq!(c("240.0.0.1"), Some(Refusal::NotGlobal));
        assert_eq!(c("192.0.0.170"), Some(Refusal::NotGlobal));
    }

    #[test]
    fn every_class() {
        for (ip, want) in [
            ("127.0.0.1", Some(Refusal::Loopback)),
            ("127.255.0.9", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("::ffff:127.0.0.1", Some(Refusal::Loopback)),
            ("::127.0.0.1", Some(Refusal::Loopback)),
            ("2002:7f00:1::", Some(Refusal::Loopback)),
            ("10.1.2.3", Some(Refusal::Private)),
            ("172.16.0.1", Some(Refusal::Private)),
            ("192.168.0.1", Some(Refusal::Private)),
            ("169.254.169.254", Some(Refusal::Private)),
            ("100.64.0.1", Some(Refusal::Private)),
            ("fd00::1", Some(Refusal::Private)),
            ("fe80::1", Some(Refusal::Private)),
            ("::ffff:0:10.0.0.1", Some(Refusal::Private)),
            ("0.0.0.0", Some(Refusal::NotGlobal)),
            ("0.1.2.3", Some(Refusal::NotGlobal)),
            ("::", Some(Refusal::NotGlobal)),
            ("255.255.255.255", Some(Refusal::NotGlobal)),
            ("224.0.0.1", Some(Refusal::NotGlobal)),
            ("192.0.2.1", Some(Refusal::NotGlobal)),
            ("198.51.100.1", Some(Refusal::NotGlobal)),
            ("203.0.113.1", Some(Refusal::NotGlobal)),
            ("ff0e::1", Some(Refusal::NotGlobal)),
            ("2001:db8::1", Some(Refusal::NotGlobal)),
            ("100::1", Some(Refusal::NotGlobal)),
            ("2001::1", Some(Refusal::NotGlobal)),
            ("64:ff9b:1::1", Some(Refusal::NotGlobal)),
            ("fec0::1", Some(Refusal::NotGlobal)),
            // Public addresses, in every form.
            ("93.184.216.34", None),
            ("192.0.0.9", None),
            ("::ffff:93.184.216.34", None),
            ("64:ff9b::5db8:d822", None),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(c(ip), want, "{ip}");
        }
    }

    #[test]
    fn escape_hatches_open_only_their_class() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(check_ip(ip("127.0.0.1"), true, false), None);
        assert_eq!(
            check_ip(ip("10.0.0.1"), true, false),
            Some(Refusal::Private)
        );
        assert_eq!(check_ip(ip("10.0.0.1"), false, true), None);
        assert_eq!(
            check_ip(ip("198.18.0.1"), true, true),
            Some(Refusal::NotGlobal)
        );
        assert_eq!(
            check_ip(ip("::ffff:169.254.169.254"), true, false),
            Some(Refusal::Private)
        );
    }
}
