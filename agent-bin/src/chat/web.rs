//! The `web_fetch` tool: off unless `[chat.web] enabled = true`, and never to this machine or
//! its network.
//!
//! A model steered by a page it read could otherwise reach the llama-server, a router's admin
//! page or a cloud metadata service. Every address a host name resolves to is checked, in the
//! resolver the HTTP client itself uses (so a second DNS answer cannot differ from the checked
//! one), and redirects are followed by hand so that each hop is checked again.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Result};

/// Why an address may not be fetched, or None when it is public.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local (private)")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1) {
                Some("loopback")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

/// A resolver that refuses non-public addresses.
struct PublicOnly;

impl ureq::Resolver for PublicOnly {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if let Some((a, why)) = addrs.iter().find_map(|a| refused(a.ip()).map(|w| (a, w))) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{netloc} resolves to {} ({why}): refused", a.ip()),
            ));
        }
        Ok(addrs)
    }
}

/// What a fetch returned.
pub struct Page {
    /// The final URL (after redirects).
    pub url: String,
    /// HTTP status.
    pub status: u16,
    /// Up to `max_bytes` of the body, as text.
    pub text: String,
}

/// Fetches `url` (http; https when built with the `tls` feature), following up to 5 redirects,
/// each checked.
pub fn fetch(url: &str, timeout: Duration, max_bytes: usize) -> Result<Page> {
    let agent = ureq::AgentBuilder::new()
        .resolver(PublicOnly)
        .redirects(0)
        .timeout(timeout)
        .build();
    let mut url = url.trim().to_string();
    for _ in 0..=5 {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("only http:// and https:// URLs can be fetched, not {url:?}");
        }
        let resp = match agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => bail!("fetching {url}: {t}"),
        };
        let status = resp.status();
        if (300..400).contains(&status) {
            let Some(loc) = resp.header("location") else {
                bail!("{url} redirected ({status}) without a Location");
            };
            url = match ureq::Response::get_url(&resp).parse::<url_join::Base>() {
                Ok(base) => base.join(loc),
                Err(_) => loc.to_string(),
            };
            continue;
        }
        let mut body = Vec::new();
        use std::io::Read;
        resp.into_reader()
            .take(max_bytes as u64)
            .read_to_end(&mut body)?;
        return Ok(Page {
            url,
            status,
            text: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    bail!("too many redirects")
}

/// Just enough URL joining for `Location` headers: absolute, scheme-relative, absolute-path
/// and relative forms.
mod url_join {
    pub struct Base {
        origin: String,
        dir: String,
    }

    impl std::str::FromStr for Base {
        type Err = ();
        fn from_str(u: &str) -> Result<Base, ()> {
            let scheme_end = u.find("://").ok_or(())? + 3;
            let path_start = u[scheme_end..]
                .find('/')
                .map_or(u.len(), |i| i + scheme_end);
            let path = &u[path_start..];
            let path = path.split(['?', '#']).next().unwrap_or("");
            let dir = match path.rfind('/') {
                Some(i) => &path[..=i],
                None => "/",
            };
            Ok(Base {
                origin: u[..path_start].to_string(),
                dir: dir.to_string(),
            })
        }
    }

    impl Base {
        pub fn join(&self, loc: &str) -> String {
            if loc.contains("://") {
                loc.to_string()
            } else if let Some(rest) = loc.strip_prefix("//") {
                let scheme = self.origin.split("://").next().unwrap_or("http");
                format!("{scheme}://{rest}")
            } else if loc.starts_with('/') {
                format!("{}{loc}", self.origin)
            } else {
                format!("{}{}{loc}", self.origin, self.dir)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_ula_unspecified_are_refused() {
        for a in [
            "127.0.0.1",
            "127.8.9.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc12::3",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(
                refused(a.parse().unwrap()).is_some(),
                "{a} should be refused"
            );
        }
        for a in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(
                refused(a.parse().unwrap()).is_none(),
                "{a} should be allowed"
            );
        }
    }

    #[test]
    fn fetching_loopback_is_refused_before_connecting() {
        // A listener that would answer if the guard let the request through.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://[::1]:{port}/"),
        ] {
            let e = fetch(&url, Duration::from_secs(2), 100).err().unwrap();
            assert!(e.to_string().contains("refused"), "{url}: {e}");
        }
        assert!(fetch("file:///etc/passwd", Duration::from_secs(2), 100).is_err());
    }

    #[test]
    fn redirect_locations_join() {
        let b: url_join::Base = "http://a.example/x/y.html?q=1".parse().unwrap();
        assert_eq!(b.join("/z"), "http://a.example/z");
        assert_eq!(b.join("z"), "http://a.example/x/z");
        assert_eq!(b.join("//b.example/w"), "http://b.example/w");
        assert_eq!(b.join("http://127.0.0.1/"), "http://127.0.0.1/");
    }
}
