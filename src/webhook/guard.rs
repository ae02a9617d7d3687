//! The SSRF guard: a callback URL may not point the relay into an internal network.
//!
//! Two checks, both in the callback HTTP client so no caller can forget them:
//! - [`check_url`] before a request: the scheme, credentials in the URL, and a host written
//!   as an address (the WHATWG parser has already turned `2130706433`, `0177.0.0.1`,
//!   `0x7f000001` and `127.1` into `127.0.0.1`) or as a loopback name;
//! - [`GuardedResolver`] when connecting: every address a host name resolves to is checked,
//!   and only allowed ones are dialled, so a name that resolves differently on the second
//!   lookup (DNS rebinding) cannot pass.
//!
//! An allowlist of CIDRs (`[webhook] allow_cidrs`, `WEBHOOK_ALLOW_CIDRS`) opens chosen ranges,
//! for receivers on a private network or on loopback in tests and demos.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a callback URL was refused. Final: the delivery ends dead with
/// `callback_url_refused` and is never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("callback_url_refused: {0}")]
pub struct Refused(pub String);

/// One CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// The ranges opened on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<Cidr>);

impl AllowList {
    /// Parses a comma- or whitespace-separated list.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether the relay may dial `ip`: allowlisted, or in no blocked range.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allows(ip) {
            return Ok(());
        }
        match blocked_range(ip) {
            Some(range) => Err(Refused(format!("{ip} is {range}"))),
            None => Ok(()),
        }
    }
}

/// An IPv4-mapped or IPv4-compatible IPv6 address as the IPv4 address it carries, so that
/// `::ffff:127.0.0.1` is judged as `127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The blocked range `ip` falls in, if any.
pub fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10/8)",
        (172, 16..=31, _) => "private (172.16/12)",
        (192, 168, _) => "private (192.168/16)",
        (169, 254, _) => "link-local (169.254/16, cloud metadata)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    };
    Some(range)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let range = if ip.is_unspecified() {
        "unspecified (::)"
    } else if ip.is_loopback() {
        "loopback (::1)"
    } else if seg[0] & 0xfe00 == 0xfc00 {
        "unique-local (fc00::/7)"
    } else if seg[0] & 0xffc0 == 0xfe80 {
        "link-local (fe80::/10)"
    } else if seg[0] & 0xffc0 == 0xfec0 {
        "site-local (fec0::/10)"
    } else if seg[0] & 0xff00 == 0xff00 {
        "multicast (ff00::/8)"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if seg[0] == 0x3fff && seg[1] & 0xf000 == 0 {
        "documentation (3fff::/20)"
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        // Well-known NAT64 (64:ff9b::/96) embeds an IPv4 address; judge that one.
        return blocked_v4(embedded_v4(seg[6], seg[7])).map(|_| "NAT64 of a blocked IPv4 address");
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // Local-use NAT64 (64:ff9b:1::/48) translates into private networks by design.
        "local NAT64 (64:ff9b:1::/48)"
    } else if seg[0] == 0x2002 {
        // 6to4 carries its IPv4 address in bits 16 to 47.
        return blocked_v4(embedded_v4(seg[1], seg[2])).map(|_| "6to4 of a blocked IPv4 address");
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo hides its IPv4 addresses; nothing legitimate calls back through it.
        "Teredo (2001::/32)"
    } else if seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] {
        "discard-only (100::/64)"
    } else if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
        // IPv4-translated (::ffff:0:a.b.c.d); IPv4-mapped is judged as IPv4 before this.
        return blocked_v4(embedded_v4(seg[6], seg[7]))
            .map(|_| "IPv4-translated of a blocked IPv4 address");
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (::/96)"
    } else {
        return None;
    };
    Some(range)
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Checks a callback URL before any connection: scheme, credentials, and a host written as an
/// address or a loopback name. Host names are checked again, on their resolved addresses, by
/// [`GuardedResolver`].
pub fn check_url(url: &str, allow: &AllowList) -> Result<Url, Refused> {
    let parsed = Url::parse(url).map_err(|_| Refused("not a URL".into()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "the scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused("the URL carries credentials".into()));
    }
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => allow.check_ip(IpAddr::V4(ip))?,
        Some(url::Host::Ipv6(ip)) => allow.check_ip(IpAddr::V6(ip))?,
        Some(url::Host::Domain(name)) => {
            // RFC 6761: `localhost` and its subdomains are loopback whatever DNS says, and a
            // trailing dot names the same host.
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
                if !allow.allows(loopback) {
                    return Err(Refused(format!("{name} is loopback")));
                }
            }
        }
        None => return Err(Refused("the URL has no host".into())),
    }
    Ok(parsed)
}

/// The DNS resolver of the callback client: resolves with the system resolver and keeps only
/// the addresses [`AllowList::check_ip`] accepts. When none is left the connection fails with
/// [`Refused`] inside the error chain.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: Arc<AllowList>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|a| allow.check_ip(a.ip()).is_ok());
            if ok.is_empty() {
                let why = match refused.first() {
                    Some(addr) => allow
                        .check_ip(addr.ip())
                        .err()
                        .map_or_else(|| "no address".to_string(), |r| r.0),
                    None => "no address".to_string(),
                };
                let refusal: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Refused(format!("{host} resolves to {why}")));
                return Err(refusal);
            }
            let addrs: Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's source chain, if any.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, allow: &AllowList) -> bool {
        check_url(url, allow).is_err()
    }

    #[test]
    fn blocks_the_internal_ranges() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.5",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378::1",
            "::ffff:0:7f00:1",
            "::7f00:1",
            "100::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(blocked_range(ip).is_some(), "{ip} must be blocked");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked_range(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn refuses_odd_spellings_of_loopback() {
        let none = AllowList::default();
        for url in [
            "http://127.0.0.1/",
            "http://localhost:8080/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
            "http://[::1]:80/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
            "http://0/",
        ] {
            assert!(refused(url, &none), "{url} must be refused");
        }
    }

    #[test]
    fn refuses_other_schemes_and_credentials() {
        let none = AllowList::default();
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "not a url",
        ] {
            assert!(refused(url, &none), "{url} must be refused");
        }
        assert!(check_url("https://hooks.example.com/x?y=1", &none).is_ok());
        assert!(check_url("http://8.8.8.8:8080/", &none).is_ok());
    }

    #[test]
    fn the_allowlist_opens_only_its_ranges() {
        let allow = AllowList::parse("127.0.0.2/32").unwrap();
        assert!(check_url("http://127.0.0.2:9000/hooks", &allow).is_ok());
        assert!(refused("http://127.0.0.1:9000/hooks", &allow));
        assert!(refused("http://localhost:9000/hooks", &allow));
        assert!(refused("http://[::1]:9000/hooks", &allow));
        let wide = AllowList::parse("127.0.0.0/8, 10.0.0.0/8").unwrap();
        assert!(check_url("http://localhost:9000/", &wide).is_ok());
        assert!(check_url("http://10.9.8.7/", &wide).is_ok());
        assert!(refused("http://192.168.0.1/", &wide));
        // A mapped IPv6 form is judged as its IPv4 address, for the allowlist too.
        assert!(wide.check_ip("::ffff:10.1.1.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn parses_cidrs() {
        assert!(Cidr::parse("10.0.0.0/8").is_ok());
        assert!(Cidr::parse("::1/128").is_ok());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("banana").is_err());
        assert_eq!(AllowList::parse("").unwrap(), AllowList::default());
        assert_eq!(AllowList::parse("127.0.0.2/32,::1").unwrap().0.len(), 2);
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses() {
        let resolver = GuardedResolver {
            allow: Arc::new(AllowList::default()),
        };
        // `localhost` resolves from /etc/hosts: no packet leaves the machine.
        let name: Name = "localhost".parse().unwrap();
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(refusal_in(err.as_ref()).is_some(), "{err}");
        let open = GuardedResolver {
            allow: Arc::new(AllowList::parse("127.0.0.0/8").unwrap()),
        };
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = open.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()));
    }
}
