//! A broker URL. It carries a password, so it formats as `<redacted>` in Debug and has no
//! Display: code that needs the text asks for it by name ([`BrokerUrl::expose`]).

/// A `redis://` or `rediss://` URL, possibly with a password.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerUrl(String);

/// The operator's own form for a replicated RedisCache (never a user's URL):
/// `redis+sentinel://[user:password@]<sentinels host:port>/<db>?master=<name>`. Connecting
/// asks the Sentinels which pod is primary now.
const VIA_SENTINELS: &str = "redis+sentinel://";

impl BrokerUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// A URL that follows `master`'s primary through the Sentinels at `sentinels`
    /// (`host:port`), authenticating as `base` (`redis://[user:password@]host:port`) does.
    pub(crate) fn via_sentinels(base: &str, sentinels: &str, master: &str, database: i32) -> Self {
        let userinfo = base
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .map(|(userinfo, _)| format!("{userinfo}@"))
            .unwrap_or_default();
        Self(format!(
            "{VIA_SENTINELS}{userinfo}{sentinels}/{database}?master={master}"
        ))
    }

    /// For a URL that follows Sentinels: theirs (`redis://[userinfo@]host:port`), and the
    /// master name.
    pub(crate) fn sentinels(&self) -> Option<(String, &str)> {
        let rest = self.0.strip_prefix(VIA_SENTINELS)?;
        let (path, master) = rest.split_once("?master=")?;
        let authority = path.split_once('/').map_or(path, |(a, _)| a);
        Some((format!("redis://{authority}"), master))
    }

    /// The URL of the primary at `host:port`, for a URL that follows Sentinels; the same
    /// credentials and database.
    pub(crate) fn at_primary(&self, host: &str, port: u16) -> Option<Self> {
        let rest = self.0.strip_prefix(VIA_SENTINELS)?;
        let (path, _) = rest.split_once("?master=")?;
        let (authority, database) = path.split_once('/').unwrap_or((path, "0"));
        let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        Some(Self(format!(
            "redis://{}{host}:{port}/{database}",
            userinfo.unwrap_or_default()
        )))
    }

    /// The database number the URL selects (0 when it names none).
    pub(crate) fn database(&self) -> i64 {
        let path = self.0.split_once("://").map_or("", |(_, rest)| rest);
        path.split_once('/')
            .map(|(_, db)| db.split('?').next().unwrap_or_default())
            .and_then(|db| db.parse().ok())
            .unwrap_or(0)
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

    #[test]
    fn a_url_via_sentinels_keeps_the_credentials_and_database_for_the_primary() {
        let url = BrokerUrl::via_sentinels(
            "redis://default:p%40ss@b.shop.svc:6379",
            "b-sentinel.shop.svc:26379",
            "b",
            1,
        );
        assert_eq!(
            url.sentinels(),
            Some((
                "redis://default:p%40ss@b-sentinel.shop.svc:26379".to_string(),
                "b"
            ))
        );
        assert_eq!(url.database(), 1);
        assert_eq!(
            url.at_primary("b-2.b-headless.shop.svc", 6379)
                .map(|u| u.expose().to_string()),
            Some("redis://default:p%40ss@b-2.b-headless.shop.svc:6379/1".to_string())
        );
        let open = BrokerUrl::via_sentinels("redis://b.shop.svc:6379", "s:26379", "b", 0);
        assert_eq!(open.expose(), "redis+sentinel://s:26379/0?master=b");
        assert_eq!(
            open.at_primary("p", 6379).map(|u| u.expose().to_string()),
            Some("redis://p:6379/0".to_string())
        );
    }

    #[test]
    fn a_plain_url_follows_no_sentinel_and_names_its_database() {
        let url = BrokerUrl::new("redis://:pw@h:6379/3");
        assert_eq!(url.sentinels(), None);
        assert_eq!(url.at_primary("p", 1), None);
        assert_eq!(url.database(), 3);
        assert_eq!(BrokerUrl::new("redis://h:6379").database(), 0);
        assert_eq!(BrokerUrl::new("rediss://h:6379/2?x=1").database(), 2);
    }
}
