//! A user's permissions in one vhost: three regular expressions over resource
//! names, for configure, write and read (RabbitMQ's model).

use regex::Regex;

/// What an operation needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Create, delete or change a resource (declare, delete).
    Configure,
    /// Put messages in (publish to an exchange, bind a queue as destination).
    Write,
    /// Take messages out (consume, get, purge, bind an exchange as source).
    Read,
}

/// The kind of resource, as named in refusal texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Exchange,
    Queue,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        }
    }
}

/// The name a resource's permissions are matched against: the default
/// exchange (named "") is checked as `amq.default`, as in RabbitMQ.
pub fn resource_name(kind: Resource, name: &str) -> &str {
    if kind == Resource::Exchange && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// One permission pattern. Like RabbitMQ's, it is an unanchored search
/// (`^`/`$` anchor it); the empty pattern grants nothing but the empty name.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    /// `None` for `.*`, which matches every name: the common case costs no regex.
    regex: Option<Regex>,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        let regex = match source {
            ".*" => None,
            "" => Some(Regex::new("^$").map_err(|e| e.to_string())?),
            s => Some(Regex::new(s).map_err(|e| format!("invalid regular expression '{s}': {e}"))?),
        };
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone)]
pub struct Permissions {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permissions {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permissions, String> {
        Ok(Permissions {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    /// Full access (`.*` for all three).
    pub fn all() -> Permissions {
        let p = Pattern {
            source: ".*".into(),
            regex: None,
        };
        Permissions {
            configure: p.clone(),
            write: p.clone(),
            read: p,
        }
    }

    pub fn allows(&self, perm: Perm, name: &str) -> bool {
        match perm {
            Perm::Configure => self.configure.matches(name),
            Perm::Write => self.write.matches(name),
            Perm::Read => self.read.matches(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_search_unanchored_like_rabbitmq() {
        let p = Permissions::new("^bob-", "^bob-|amq.default", "bob").unwrap();
        assert!(p.allows(Perm::Configure, "bob-q"));
        assert!(!p.allows(Perm::Configure, "other"));
        assert!(p.allows(Perm::Write, "amq.default"));
        assert!(p.allows(Perm::Read, "not-bob-either"), "unanchored");
        assert!(!p.allows(Perm::Read, "alice"));
    }

    #[test]
    fn empty_pattern_grants_nothing() {
        let p = Permissions::new("", ".*", ".*").unwrap();
        assert!(!p.allows(Perm::Configure, "q"));
        assert!(p.allows(Perm::Write, "anything"));
    }

    #[test]
    fn bad_regex_is_refused() {
        assert!(Permissions::new("(", ".*", ".*").is_err());
    }
}
