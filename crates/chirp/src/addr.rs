//! Parsing of `IP:PORT` arguments, with errors that say what was wrong and what was expected.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Parses `HOST:PORT`, `[IPv6]:PORT` or, where `default_host` is given, a bare `PORT`.
/// `localhost` and other names are resolved (first address wins).
pub(crate) fn parse_addr(s: &str, allow_port_zero: bool) -> Result<SocketAddr, String> {
    let s = s.trim();
    let example = "expected IP:PORT, e.g. 127.0.0.1:5000 or [::1]:5000";
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p),
        _ => return Err(format!("invalid address '{s}': {example}")),
    };
    let port =
        parse_port(port, allow_port_zero).map_err(|e| format!("invalid address '{s}': {e}"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.contains(':') || host.is_empty() {
        return Err(format!(
            "invalid address '{s}': '{host}' is not an IP address ({example})"
        ));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("invalid address '{s}': cannot resolve host '{host}'"))
}

/// Parses a port number with a range check that names the range.
pub(crate) fn parse_port(s: &str, allow_zero: bool) -> Result<u16, String> {
    let s = s.trim();
    let n: u64 = s
        .parse()
        .map_err(|_| format!("port '{s}' is not a number"))?;
    let min = if allow_zero { 0 } else { 1 };
    if n < min || n > 65_535 {
        return Err(format!("port {n} is out of range ({min}-65535)"));
    }
    Ok(n as u16)
}

/// Parses an IP address (or `localhost`).
pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.parse()
        .map_err(|_| format!("'{s}' is not an IP address (e.g. 127.0.0.1 or ::1)"))
}

/// For clap: a socket address that must have a non-zero port.
pub(crate) fn remote_addr(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s, false)
}

/// For clap: a local address; port 0 asks the OS for a free port.
pub(crate) fn local_addr(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:5000", false),
            Ok(([127, 0, 0, 1], 5000).into())
        );
        assert_eq!(parse_addr("[::1]:7", false).map(|a| a.port()), Ok(7));
        assert_eq!(
            parse_addr("localhost:9", false).map(|a| a.ip().is_loopback()),
            Ok(true)
        );
        assert_eq!(parse_addr("0.0.0.0:0", true).map(|a| a.port()), Ok(0));
        let e = parse_addr("127.0.0.1:70000", false).unwrap_err();
        assert!(e.contains("out of range (1-65535)"), "{e}");
        let e = parse_addr("127.0.0.1:0", false).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse_addr("nonsense", false).unwrap_err();
        assert!(e.contains("expected IP:PORT"), "{e}");
        let e = parse_addr("1.2.3.4:http", false).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        assert!(parse_ip("10.0.0.300").is_err());
        assert_eq!(parse_port("65535", false), Ok(65535));
    }
}
