//! Server-generated names: `amq.gen-…` queues and `amq.ctag-…` consumer tags,
//! in RabbitMQ's shape (a prefix and 22 characters of URL-safe base64 of 16 random bytes).

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

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let q = super::queue_name();
        assert!(q.starts_with("amq.gen-") && q.len() == 30, "{q}");
        assert_ne!(q, super::queue_name());
        assert!(super::consumer_tag().starts_with("amq.ctag-"));
    }
}
