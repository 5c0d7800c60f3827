//! `amqp://user:pass@host:port/vhost` URLs.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("truncated %-escape in '{s}'"))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| format!("bad %-escape '%{hex}' in '{s}'"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8 once decoded"))
}

impl AmqpUrl {
    pub fn parse(url: &str) -> Result<AmqpUrl, String> {
        let rest = url.strip_prefix("amqp://").ok_or_else(|| {
            format!("URL '{url}' must start with amqp:// (amqps is not supported)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(i) => (percent_decode(&ui[..i])?, percent_decode(&ui[i + 1..])?),
                None => (percent_decode(ui)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [::1]:5672
            let end = h
                .find(']')
                .ok_or_else(|| format!("unclosed '[' in URL '{url}'"))?;
            let host = h[..end].to_owned();
            let port = match h[end + 1..].strip_prefix(':') {
                Some(p) => Some(p),
                None if h[end + 1..].is_empty() => None,
                None => return Err(format!("junk after ']' in URL '{url}'")),
            };
            (host, port)
        } else {
            match hostport.rfind(':') {
                Some(i) => (hostport[..i].to_owned(), Some(&hostport[i + 1..])),
                None => (hostport.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("bad port '{p}' in URL '{url}'"))?,
            None => 5672,
        };
        let host = if host.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        let vhost = match path {
            None | Some("") => "/".to_owned(),
            Some(p) => percent_decode(p)?,
        };
        Ok(AmqpUrl {
            user,
            password,
            host,
            port,
            vhost,
        })
    }

    /// host:port for `TcpStream::connect`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with the password hidden, for reports.
    pub fn redacted(&self) -> String {
        let vhost = if self.vhost == "/" {
            "%2f".to_owned()
        } else {
            self.vhost.replace('%', "%25").replace('/', "%2f")
        };
        format!("amqp://{}:***@{}/{}", self.user, self.addr(), vhost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = AmqpUrl::parse("amqp://guest:gu%40st@127.0.0.1:5676/%2f").unwrap();
        assert_eq!(u.user, "guest");
        assert_eq!(u.password, "gu@st");
        assert_eq!(u.addr(), "127.0.0.1:5676");
        assert_eq!(u.vhost, "/");
        assert_eq!(u.redacted(), "amqp://guest:***@127.0.0.1:5676/%2f");
    }

    #[test]
    fn defaults_and_ipv6() {
        let u = AmqpUrl::parse("amqp://localhost").unwrap();
        assert_eq!(
            (u.user.as_str(), u.port, u.vhost.as_str()),
            ("guest", 5672, "/")
        );
        let u = AmqpUrl::parse("amqp://a:b@[::1]:5690/dev").unwrap();
        assert_eq!(u.addr(), "[::1]:5690");
        assert_eq!(u.vhost, "dev");
        assert!(AmqpUrl::parse("http://x").is_err());
        assert!(AmqpUrl::parse("amqp://h:notaport/").is_err());
        assert!(AmqpUrl::parse("amqp://h/%zz").is_err());
    }
}
