//! A broker URL. It carries a password, so it formats as `<redacted>` in Debug and has no
//! Display: code that needs the text asks for it by name ([`BrokerUrl::expose`]).

/// A `redis://` or `rediss://` URL, possibly with a password.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, for a Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerUrl(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_never_shows_in_debug_even_inside_other_types() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            url: BrokerUrl,
        }
        let holder = Holder {
            url: BrokerUrl::new("redis://:hunter2@h:6379/0"),
        };
        let text = format!("{holder:?} {holder:#?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
