//! Server-generated names: `amq.gen-…` queues and `amq.ctag-…` consumer tags,
//! in RabbitMQ's shape (a prefix and 22 characters of URL-safe base64 of 16 random bytes);
//! and the length rule for names that arrive by other ways than AMQP.

use base64::Engine;

fn random_suffix() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn queue_name() -> String {
    format!("amq.gen-{}", random_suffix())
}

pub fn consumer_tag() -> String {
    format!("amq.ctag-{}", random_suffix())
}

/// AMQP carries vhost, exchange and queue names and routing keys as short
/// strings (at most 255 bytes). Names that come another way (the HTTP API,
/// definitions) must fit too, or AMQP clients could never name them.
pub fn check_short(what: &str, name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!(
            "{what} '{}…' is {} bytes long; AMQP allows at most 255",
            name.chars().take(32).collect::<String>(),
            name.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let q = super::queue_name();
        assert!(q.starts_with("amq.gen-") && q.len() == 30, "{q}");
        assert_ne!(q, super::queue_name());
        assert!(super::consumer_tag().starts_with("amq.ctag-"));
        assert!(super::check_short("queue name", &"q".repeat(255)).is_ok());
        assert!(super::check_short("queue name", &"q".repeat(256)).is_err());
    }
}
