//! Outbound proxy URLs: `http://`, `https://`, `socks5://`, `socks5h://`.
//!
//! A proxy URL may carry credentials (`http://user:pass@host:port`). They are kept as
//! secrets from the moment they are parsed: [`Proxy`]'s `Display` and `Debug` show only
//! `scheme://host:port`, and no error message repeats a URL as written.

use std::fmt;

use llm_bridge_core::secrecy::SecretString;

/// How the gateway talks to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// An HTTP proxy, tunnelling with `CONNECT`.
    Http,
    /// An HTTP proxy reached over TLS, tunnelling with `CONNECT`.
    Https,
    /// SOCKS5; the gateway resolves the upstream's host name.
    Socks5,
    /// SOCKS5; the proxy resolves the upstream's host name.
    Socks5h,
}

impl ProxyScheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// The port a URL without one means: the scheme's own, and SOCKS's registered 1080.
    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        }
    }
}

/// A parsed proxy URL. `Display` and `Debug` never show its credentials.
#[derive(Clone)]
pub struct Proxy {
    scheme: ProxyScheme,
    /// As in a URL: IPv6 addresses keep their brackets.
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

/// A proxy's user name and password (both treated as secrets).
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: SecretString,
    pub(crate) password: SecretString,
}

impl Proxy {
    /// Parses `scheme://[user[:password]@]host[:port][/]`; the scheme is required. User and
    /// password may be percent-encoded (`p%40ss` for `p@ss`).
    pub fn parse(url: &str) -> Result<Proxy, ProxyUrlError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or(ProxyUrlError::new(
            "expected a URL such as http://host:port or socks5://host:port",
        ))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            other => {
                return Err(ProxyUrlError(format!(
                    "unsupported proxy scheme '{}' (expected http, https, socks5 or socks5h)",
                    printable(other)
                )));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        // Credentials end at the last '@': a password may contain '/', '?' or '#' unencoded
        // in what users write, and they must never decide where the host starts.
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        if host_port.contains(['/', '?', '#']) {
            return Err(ProxyUrlError::new(
                "a proxy URL has no path, query or fragment: expected scheme://host:port",
            ));
        }
        let parsed: http::uri::Authority = host_port
            .parse()
            .map_err(|_| ProxyUrlError::new("the host and port are not valid"))?;
        let host = parsed.host();
        if host.is_empty() {
            return Err(ProxyUrlError::new("the proxy URL has no host"));
        }
        // What follows the host (after an IPv6 address's ']'), if anything, is the port.
        let after_host = host_port
            .rsplit_once(']')
            .map_or(host_port, |(_, rest)| rest);
        let port = match after_host.split_once(':') {
            None => scheme.default_port(),
            Some((_, "")) => return Err(ProxyUrlError::new("the port is empty")),
            Some((_, port)) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(ProxyUrlError::new(
                        "the port must be a number from 1 to 65535",
                    ));
                }
            },
        };
        let credentials = userinfo.map(|u| credentials(u, scheme)).transpose()?;
        Ok(Proxy {
            scheme,
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// Parses a value of `HTTPS_PROXY` & co.: like [`Proxy::parse`], and a value without a
    /// scheme means `http://`, as curl reads it.
    pub fn parse_env(value: &str) -> Result<Proxy, ProxyUrlError> {
        let value = value.trim();
        if value.contains("://") {
            Proxy::parse(value)
        } else {
            Proxy::parse(&format!("http://{value}"))
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The host, as in a URL (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the URL carries a user name and password.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }
}

fn credentials(userinfo: &str, scheme: ProxyScheme) -> Result<Credentials, ProxyUrlError> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ProxyUrlError::new("the credentials are not valid UTF-8 once decoded"))
    };
    let (user, password) = (decode(user)?, decode(password)?);
    if matches!(scheme, ProxyScheme::Socks5 | ProxyScheme::Socks5h)
        && (user.len() > 255 || password.len() > 255)
    {
        return Err(ProxyUrlError::new(
            "SOCKS5 allows at most 255 bytes of user name and of password",
        ));
    }
    Ok(Credentials {
        user: SecretString::from(user),
        password: SecretString::from(password),
    })
}

/// Only printable ASCII of what a user wrote goes into a message, and not much of it.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(20)
        .collect()
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &format_args!("{self}"))
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Why a proxy URL was rejected. The message never repeats the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrlError(String);

impl ProxyUrlError {
    fn new(message: &str) -> Self {
        ProxyUrlError(message.to_owned())
    }
}

impl fmt::Display for ProxyUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyUrlError {}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_bridge_core::secrecy::ExposeSecret;

    #[test]
    fn schemes_ports_and_credentials() {
        let p = Proxy::parse("http://127.0.0.1:3128").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Http, "127.0.0.1", 3128)
        );
        assert!(!p.has_credentials());
        assert_eq!(Proxy::parse("http://proxy").unwrap().port(), 80);
        assert_eq!(Proxy::parse("HTTPS://proxy/").unwrap().port(), 443);
        assert_eq!(Proxy::parse("socks5://proxy").unwrap().port(), 1080);
        let p = Proxy::parse("socks5h://al%40ice:p%3Ass@[::1]:1081").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Socks5h, "[::1]", 1081)
        );
        let c = p.credentials().unwrap();
        assert_eq!(c.user.expose_secret(), "al@ice");
        assert_eq!(c.password.expose_secret(), "p:ss");
        // An unencoded '@' in the password: the host starts after the last one.
        let p = Proxy::parse("http://bob:p@ss@proxy:8080").unwrap();
        assert_eq!(p.host(), "proxy");
        assert_eq!(p.credentials().unwrap().password.expose_secret(), "p@ss");
        assert_eq!(
            Proxy::parse_env("proxy.corp:8080").unwrap().to_string(),
            "http://proxy.corp:8080"
        );
    }

    #[test]
    fn bad_urls_are_explained_without_repeating_them() {
        for (url, expected) in [
            ("127.0.0.1:7890", "expected a URL such as"),
            ("socks4://h:1", "unsupported proxy scheme 'socks4'"),
            ("ftp://u:s3cret@h:1", "unsupported proxy scheme 'ftp'"),
            ("http://u:s3cret@h:1/path", "no path"),
            ("http://u:s3cret@:1", "no host"),
            ("http://u:s3cret@h:99999", "from 1 to 65535"),
            ("http://u:s3cret@h:0", "from 1 to 65535"),
            ("http://u:s3cret@h:", "port is empty"),
            ("http://u:s3cret@h x:1", "not valid"),
        ] {
            let e = Proxy::parse(url).unwrap_err().to_string();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
        let long = format!("socks5://{}:x@h:1", "u".repeat(256));
        assert!(Proxy::parse(&long).unwrap_err().to_string().contains("255"));
    }

    #[test]
    fn display_and_debug_hide_credentials() {
        let p = Proxy::parse("http://alice:s3cret@proxy.corp:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        let debug = format!("{p:?}");
        assert!(
            debug.contains("http://proxy.corp:3128") && debug.contains("[redacted]"),
            "{debug}"
        );
        assert!(
            !debug.contains("s3cret") && !debug.contains("alice"),
            "{debug}"
        );
    }
}
