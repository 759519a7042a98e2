//! A periodic task sends the same message on every run except for its id, expiry and
//! delivery tag. [`Stamp`] encodes (validates and self-checks) the message once with marker
//! values in those places; each run then copies the fixed text and writes its own values
//! in: byte for byte what the full encoder writes, for a fraction of the work.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use uuid::Uuid;

use super::message::{EncodeError, EncodedMessage, TaskMessage, expiration_ms};
use super::python::isoformat;
use super::queue::TransportOptions;
use super::validate;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Id,
    Expires,
    Expiration,
    DeliveryTag,
}

/// A message with holes for the per-run values.
#[derive(Clone, Debug)]
pub struct Stamp {
    parts: Vec<Part>,
    queue_key: String,
    /// `expires` is this long after the run's slot.
    expires_after: Option<TimeDelta>,
    len: usize,
}

/// How often each marker occurs in an envelope: the id in `id`, `root_id` and
/// `correlation_id`; the others once.
const ID_COUNT: usize = 3;

impl Stamp {
    /// Encodes `msg` in full with marker values. `Ok(None)` when the markers are not where
    /// expected (say the args contain one by chance): then every run is encoded in full.
    /// `msg.expires`, if set, is replaced by the marker; `expires_after` says how each run
    /// sets it.
    pub fn new(
        msg: &TaskMessage,
        expires_after: Option<TimeDelta>,
        transport: &TransportOptions,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>, EncodeError> {
        let id = Uuid::new_v4();
        let tag = Uuid::new_v4();
        // Far enough ahead to be valid, with microseconds no real expiry shares.
        let expires: DateTime<FixedOffset> = (now
            + TimeDelta::days(3653)
            + TimeDelta::microseconds(i64::from(id.as_fields().1) + 1))
        .fixed_offset();
        let mut msg = msg.clone();
        msg.id = id;
        msg.expires = expires_after.map(|_| expires);
        let encoded = msg.encode(transport, tag, now)?;
        let mut markers = vec![(id.hyphenated().to_string(), Part::Id, ID_COUNT)];
        markers.push((tag.hyphenated().to_string(), Part::DeliveryTag, 1));
        if let Some(ms) = msg.expiration_ms(now) {
            markers.push((isoformat(&expires), Part::Expires, 1));
            markers.push((format!("\"{ms}\""), Part::Expiration, 1));
        }
        let Some(parts) = split(&encoded.envelope, &markers) else {
            return Ok(None);
        };
        Ok(Some(Self {
            parts,
            queue_key: encoded.queue_key,
            expires_after,
            len: encoded.envelope.len(),
        }))
    }

    /// The message of run `id` for `slot`, published at `now`. `None` when its expiry is
    /// not valid at `now` (the full encoder says why).
    pub fn stamp(
        &self,
        id: Uuid,
        slot: DateTime<Utc>,
        delivery_tag: Uuid,
        now: DateTime<Utc>,
    ) -> Option<EncodedMessage> {
        let expires = match self.expires_after {
            Some(after) => {
                let at = slot.checked_add_signed(after)?.fixed_offset();
                validate::validate_times(None, Some(&at), now).ok()?;
                Some(at)
            }
            None => None,
        };
        let id_text = id.hyphenated().to_string();
        let tag_text = delivery_tag.hyphenated().to_string();
        let mut out = String::with_capacity(self.len);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Id => out.push_str(&id_text),
                Part::DeliveryTag => out.push_str(&tag_text),
                Part::Expires => out.push_str(&isoformat(expires.as_ref()?)),
                Part::Expiration => {
                    out.push('"');
                    out.push_str(&expiration_ms(&expires?, now).to_string());
                    out.push('"');
                }
            }
        }
        Some(EncodedMessage {
            queue_key: self.queue_key.clone(),
            envelope: out,
            delivery_tag,
        })
    }
}

/// Splits `text` at every marker; `None` unless each occurs exactly its count of times
/// and no two overlap.
fn split(text: &str, markers: &[(String, Part, usize)]) -> Option<Vec<Part>> {
    let mut found: Vec<(usize, usize, Part)> = Vec::new();
    for (marker, part, count) in markers {
        let hits: Vec<usize> = text
            .match_indices(marker.as_str())
            .map(|(i, _)| i)
            .collect();
        if hits.len() != *count {
            return None;
        }
        found.extend(hits.into_iter().map(|i| (i, marker.len(), part.clone())));
    }
    found.sort_by_key(|(i, _, _)| *i);
    let mut parts = Vec::new();
    let mut at = 0;
    for (i, len, part) in found {
        if i < at {
            return None;
        }
        parts.push(Part::Text(text[at..i].to_string()));
        parts.push(part);
        at = i + len;
    }
    parts.push(Part::Text(text[at..].to_string()));
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 123_456_000).expect("ts")
    }

    fn message() -> TaskMessage {
        TaskMessage::new("proj.tasks.refresh", Uuid::nil())
            .args(json!([1, "Zoë ✓", {"deep": [null, 2.5]}]))
            .kwargs(json!({"greeting": "héllo \"quoted\""}))
            .queue("mail")
            .priority(6)
            .header("tenant", "acme")
    }

    /// Every run's stamped message equals the full encoding of the same run.
    #[test]
    fn a_stamped_message_is_the_full_encoding_byte_for_byte() {
        let transport = TransportOptions::default();
        for after in [None, Some(TimeDelta::seconds(30))] {
            let stamp = Stamp::new(&message(), after, &transport, at(1_900_000_000))
                .expect("encodes")
                .expect("markers found");
            for (n, slot) in [1_900_000_001, 1_900_003_600, 1_950_000_000]
                .into_iter()
                .enumerate()
            {
                let slot = at(slot);
                let now = slot + TimeDelta::milliseconds(3 + n as i64);
                let id = Uuid::new_v4();
                let tag = Uuid::new_v4();
                let stamped = stamp.stamp(id, slot, tag, now).expect("valid");
                let mut msg = message();
                msg.id = id;
                msg.expires = after.map(|a| (slot + a).fixed_offset());
                let full = msg.encode(&transport, tag, now).expect("full");
                assert_eq!(stamped, full, "run {n}, expires after {after:?}");
            }
        }
    }

    #[test]
    fn an_expired_run_is_left_to_the_full_encoder() {
        let after = Some(TimeDelta::seconds(5));
        let stamp = Stamp::new(&message(), after, &TransportOptions::default(), at(0))
            .expect("encodes")
            .expect("markers");
        let slot = at(1_900_000_000);
        assert!(
            stamp
                .stamp(
                    Uuid::new_v4(),
                    slot,
                    Uuid::new_v4(),
                    slot + TimeDelta::seconds(6)
                )
                .is_none()
        );
    }

    #[test]
    fn markers_must_occur_exactly_as_often_as_expected() {
        let markers = [("M".to_string(), Part::Id, 2)];
        assert_eq!(
            split("aMbMc", &markers),
            Some(vec![
                Part::Text("a".into()),
                Part::Id,
                Part::Text("b".into()),
                Part::Id,
                Part::Text("c".into()),
            ])
        );
        assert_eq!(split("aMbMcM", &markers), None);
        let overlapping = [
            ("ab".to_string(), Part::Id, 1),
            ("bc".to_string(), Part::DeliveryTag, 1),
        ];
        assert_eq!(split("abc", &overlapping), None);
    }
}
