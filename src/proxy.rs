//! The client's address behind a reverse proxy (`server.trusted_proxies`).
//!
//! `Forwarded` (RFC 7239) and `X-Forwarded-For` are believed only when the connecting peer is a
//! trusted proxy: anyone else could write them, and the throttles would count a forged address.
//! Read right to left, each hop that is itself a trusted proxy is skipped; the first one that is
//! not is the client (a client can prepend whatever it likes, but not past our own proxy).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address the throttles use, set on each request by `server::serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Which header the trusted proxies set (`server.forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ForwardedHeader {
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The client of a request from `peer` with `headers`.
///
/// Addresses are compared in canonical form: on a dual-stack (`[::]`) listener an IPv4 proxy
/// connects as `::ffff:a.b.c.d`, which must still match `a.b.c.d/32`.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_for(headers, header);
    let mut client = peer;
    // Right to left: the nearest hop first.
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = *ip,
            Some(ip) => return *ip,
            // An unknown or obfuscated hop ("unknown", "_hidden"): stop believing there.
            None => return client,
        }
    }
    client
}

/// What the throttles count a client by: an IPv4 address, or the /64 an IPv6 address is in
/// (one subscriber usually holds a whole /64, and could otherwise take a fresh quota with each
/// of its 2^64 addresses).
pub fn throttle_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// The `for=` hops of `Forwarded`, or the entries of `X-Forwarded-For`, as `header` says, in
/// order (farthest first); `None` for an entry that is not an address.
fn forwarded_for(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if header == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(v.trim()))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| parse_node(s.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    parse_address(node).map(|ip| ip.to_canonical())
}

fn parse_address(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let key = |s: &str| throttle_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    #[test]
    fn only_the_header_the_proxy_sets_is_read() {
        // nginx appends the client to X-Forwarded-For and passes the client's own Forwarded
        // through: reading Forwarded would let the client pick its address.
        let trusted = nets(&["127.0.0.1/32"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted, XFF), ip("203.0.113.5"));
        assert_eq!(client_ip(peer, &h, &trusted, FWD), ip("198.51.100.1"));
        let only_forwarded = headers(&[("forwarded", "for=198.51.100.1")]);
        assert_eq!(client_ip(peer, &only_forwarded, &trusted, XFF), peer);
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_ipv4_proxy_on_a_dual_stack_listener_is_trusted() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9, ::ffff:10.0.0.5")]);
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer, &h, &trusted, XFF),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(untrusted, &h, &trusted, XFF),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn headers_are_ignored_from_an_untrusted_peer() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[], XFF), peer);
        assert_eq!(client_ip(peer, &h, &nets(&["10.0.0.0/8"]), XFF), peer);
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // The client forged the leftmost entry; our proxies are 10.0.0.x.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(
            client_ip(peer, &h, &trusted, XFF),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[(
            "forwarded",
            r#"for=1.2.3.4, for="[2001:db8::7]:4711";proto=https"#,
        )]);
        assert_eq!(
            client_ip(peer, &h, &trusted, FWD),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;by=10.0.0.2")]);
        assert_eq!(
            client_ip(peer, &h, &trusted, FWD),
            "192.0.2.60".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted, XFF), peer);
        // An unknown hop stops the walk at the last trusted one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, unknown")]);
        assert_eq!(client_ip(peer, &h, &trusted, XFF), peer);
    }
}
