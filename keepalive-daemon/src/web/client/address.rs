//! `connections --web.address`: where the daemon is, as an http:// or https:// URL or as
//! HOST:PORT (plain HTTP, as before URLs were accepted). The URL is parsed by the `http`
//! crate that ureq re-exports; this module only adds the defaults and the operator's
//! messages.

use std::fmt;

use ureq::http::Uri;

/// The path asked for when the URL names none (or only "/").
pub const DEFAULT_PATH: &str = "/connections";

/// http or https.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A parsed --web.address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonAddress {
    pub scheme: Scheme,
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path, with the query the operator gave if any (`?limit=` is added to it).
    pub path_and_query: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "invalid --web.address {address:?}: {reason}; expected http://HOST:PORT, https://HOST:PORT[/PATH] or HOST:PORT (e.g. 127.0.0.1:10291)"
    )]
    Syntax { address: String, reason: String },
    #[error(
        "--web.address {address:?} carries credentials: put them in --http.config.file (basic_auth with username and password_file), not on the command line"
    )]
    Credentials { address: String },
}

impl DaemonAddress {
    pub fn parse(address: &str) -> Result<DaemonAddress, AddressError> {
        let syntax = |reason: &str| AddressError::Syntax {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        if address.trim().is_empty() {
            return Err(syntax("empty"));
        }
        let url = if address.contains("://") {
            address.to_owned()
        } else if address.contains('/') || address.contains('?') {
            return Err(syntax("HOST:PORT takes no path: write a URL"));
        } else {
            format!("http://{address}")
        };
        let uri: Uri = url.parse().map_err(|e| syntax(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => return Err(syntax(&format!("scheme {other:?} is not http or https"))),
            None => return Err(syntax("no scheme")),
        };
        let authority = uri.authority().ok_or_else(|| syntax("no host"))?;
        if authority.as_str().contains('@') {
            return Err(AddressError::Credentials {
                address: address.to_owned(),
            });
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(syntax("no host"));
        }
        // The text after the host's last ':' (not inside an IPv6 address's brackets).
        let port_text = authority
            .as_str()
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        let explicit_port = match port_text {
            None => None,
            Some("") => return Err(syntax("empty port")),
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| syntax(&format!("invalid port {p:?}")))?,
            ),
        };
        let port = match (explicit_port, address.contains("://"), scheme) {
            (Some(p), ..) => p,
            // HOST:PORT is the old form: the port was always required.
            (None, false, _) => return Err(syntax("no port")),
            (None, true, Scheme::Http) => 80,
            (None, true, Scheme::Https) => 443,
        };
        if port == 0 {
            return Err(syntax("port 0"));
        }
        let path = match uri.path() {
            "" | "/" => DEFAULT_PATH,
            p => p,
        };
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        Ok(DaemonAddress {
            scheme,
            host: host.to_owned(),
            port,
            path_and_query,
        })
    }

    /// The URL to GET with `limit`, naming the host `host` (the address's own host, or
    /// tls_config.server_name when the certificate carries another name).
    /// `at_risk`: only the connections at risk (`&at_risk=1`).
    pub fn url_with_host(&self, host: &str, limit: usize, at_risk: bool) -> String {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let at_risk = if at_risk { "&at_risk=1" } else { "" };
        format!(
            "{}://{}:{}{}{sep}limit={limit}{at_risk}",
            self.scheme.as_str(),
            bracketed(host),
            self.port,
            self.path_and_query
        )
    }

    /// The URL to GET with `limit` (and `at_risk`).
    pub fn url(&self, limit: usize, at_risk: bool) -> String {
        self.url_with_host(&self.host, limit, at_risk)
    }
}

/// IPv6 addresses in URLs need brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme.as_str(),
            bracketed(&self.host),
            self.port,
            self.path_and_query
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (Scheme, String, u16, String) {
        let a = DaemonAddress::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.scheme, a.host, a.port, a.path_and_query)
    }

    #[test]
    fn host_port_is_plain_http_to_connections() {
        assert_eq!(
            parsed("127.0.0.1:10291"),
            (
                Scheme::Http,
                "127.0.0.1".into(),
                10291,
                "/connections".into()
            )
        );
        assert_eq!(
            parsed("[::1]:9"),
            (Scheme::Http, "::1".into(), 9, "/connections".into())
        );
        assert_eq!(
            parsed("localhost:10291"),
            (
                Scheme::Http,
                "localhost".into(),
                10291,
                "/connections".into()
            )
        );
        let a = DaemonAddress::parse("[::1]:9").unwrap();
        assert_eq!(a.url(5, false), "http://[::1]:9/connections?limit=5");
    }

    #[test]
    fn urls_take_scheme_port_and_path() {
        assert_eq!(
            parsed("https://host.example:10291"),
            (
                Scheme::Https,
                "host.example".into(),
                10291,
                "/connections".into()
            )
        );
        assert_eq!(
            parsed("https://host.example:10291/"),
            (
                Scheme::Https,
                "host.example".into(),
                10291,
                "/connections".into()
            )
        );
        assert_eq!(
            parsed("http://10.0.0.1:8080/keepalive/connections"),
            (
                Scheme::Http,
                "10.0.0.1".into(),
                8080,
                "/keepalive/connections".into()
            )
        );
        // Without a port, the scheme's as in any URL.
        assert_eq!(parsed("https://h").2, 443);
        assert_eq!(parsed("http://h").2, 80);
        assert_eq!(
            parsed("https://[2001:db8::1]:10291"),
            (
                Scheme::Https,
                "2001:db8::1".into(),
                10291,
                "/connections".into()
            )
        );
        let a = DaemonAddress::parse("https://h:1/c?x=1").unwrap();
        assert_eq!(a.url(7, false), "https://h:1/c?x=1&limit=7");
        assert_eq!(a.url(7, true), "https://h:1/c?x=1&limit=7&at_risk=1");
        assert_eq!(
            a.url_with_host("kat.test", 7, false),
            "https://kat.test:1/c?x=1&limit=7"
        );
        assert_eq!(a.to_string(), "https://h:1/c?x=1");
    }

    #[test]
    fn bad_addresses_say_what_is_expected() {
        for (bad, reason) in [
            ("", "empty"),
            ("host", "no port"),
            ("host:", "empty port"),
            ("host:port", "invalid"),
            ("host:99999", "invalid"),
            ("host:0", "port 0"),
            ("host:1/connections", "HOST:PORT takes no path"),
            ("ftp://host:1", "scheme \"ftp\" is not http or https"),
            ("https://", "invalid"),
            ("https://:1", "no host"),
            ("http://host:x", "invalid"),
        ] {
            let e = DaemonAddress::parse(bad)
                .map(|a| format!("accepted as {a}"))
                .unwrap_or_else(|e| e.to_string().to_lowercase());
            assert!(
                e.contains(&reason.to_lowercase()) && e.contains("expected http://host:port"),
                "{bad:?}: {e}"
            );
        }
        let e = DaemonAddress::parse("https://u:p@h:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http.config.file"), "{e}");
    }
}
