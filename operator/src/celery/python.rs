//! Python-compatible renderings: `json.dumps` bytes, `repr()` and `datetime.isoformat()`.
//!
//! Celery writes its messages with Python's `json.dumps` (`", "` / `": "` separators,
//! ASCII-only output). Writing the same bytes keeps our messages indistinguishable from
//! Celery's own, so the golden captures can be compared byte for byte.

use std::fmt::Write as _;
use std::io;

use chrono::{DateTime, FixedOffset, Timelike};
use serde::Serialize;
use serde_json::Value;

/// A `serde_json` formatter reproducing `json.dumps(obj)` with its defaults
/// (`ensure_ascii=True`, `separators=(", ", ": ")`, floats as `repr(float)`).
pub(crate) struct PyJsonFormatter;

impl serde_json::ser::Formatter for PyJsonFormatter {
    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(float_repr(value).as_bytes())
    }

    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // serde_json already escapes `"`, `\` and C0 controls before calling this;
        // everything else outside printable ASCII becomes `\uXXXX` (UTF-16 units), as
        // Python's `ensure_ascii` does (it escapes DEL too).
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if (' '..='~').contains(&ch) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array_value<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W>(&mut self, writer: &mut W) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(b": ")
    }
}

/// Serialize `value` exactly as Python's `json.dumps(value)` would.
pub(crate) fn to_py_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyJsonFormatter);
    value.serialize(&mut ser)?;
    // The formatter only ever emits ASCII, so this conversion is lossless.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `repr(float)` (which is also what `json.dumps` writes): shortest round-trip digits,
/// fixed notation for exponents -4..=15, otherwise `1e+16` / `1.5e-07` style.
pub(crate) fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` yields the shortest round-trip digits, like Python's repr.
    let sci = format!("{value:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if digits.is_empty() {
        return sci;
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point.unsigned_abs() as usize;
            if digits.len() <= point {
                let zeros = "0".repeat(point - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                let (int, frac) = digits.split_at(point);
                format!("{sign}{int}.{frac}")
            }
        }
    } else {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{head}{frac}e{exp_sign}{:02}", exp.unsigned_abs())
    }
}

/// `repr()` of the JSON value as Python sees it after `json.loads`.
pub(crate) fn repr_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (None, None, Some(f)) => out.push_str(&float_repr(f)),
            (None, None, None) => out.push_str(&n.to_string()),
        },
        Value::String(s) => repr_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(key, out);
                out.push_str(": ");
                repr_value(item, out);
            }
            out.push('}');
        }
    }
}

/// `repr(tuple(args))`: Celery's `argsrepr` for a call made with a tuple, e.g. `(2, 3)`,
/// `(1,)`, `()`.
pub(crate) fn repr_tuple(items: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        repr_value(item, &mut out);
    }
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

/// `repr(str)`: single quotes unless only single quotes occur; printable characters stay.
pub(crate) fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        let code = u32::from(ch);
        match ch {
            c if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii() && (c == '\x7f' || c < ' ') => {
                let _ = write!(out, "\\x{code:02x}");
            }
            c if c.is_ascii() || is_printable(c) => out.push(c),
            _ if code <= 0xff => {
                let _ = write!(out, "\\x{code:02x}");
            }
            _ if code <= 0xffff => {
                let _ = write!(out, "\\u{code:04x}");
            }
            _ => {
                let _ = write!(out, "\\U{code:08x}");
            }
        }
    }
    out.push(quote);
}

/// Approximates Python's `str.isprintable` for non-ASCII characters (the repr is
/// informational only): controls, non-space separators, format characters and private
/// use are escaped.
fn is_printable(c: char) -> bool {
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e000}'..='\u{f8ff}'
            | '\u{f0000}'..='\u{10ffff}'))
}

/// Cut a repr to `max_chars` characters plus `...`, like Celery's `saferepr(maxlen=...)`.
pub(crate) fn truncate_repr(repr: String, max_chars: usize) -> String {
    match repr.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &repr[..cut]),
        None => repr,
    }
}

/// `datetime.isoformat()`: microseconds only when non-zero, offset as `+HH:MM`.
pub(crate) fn isoformat(dt: &DateTime<FixedOffset>) -> String {
    // Python has no sub-microsecond precision and no leap seconds (validation rejects those).
    let micros = (dt.nanosecond() / 1000).min(999_999);
    let mut out = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if micros != 0 {
        let _ = write!(out, ".{micros:06}");
    }
    let offset = dt.offset().local_minus_utc();
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    let _ = write!(out, "{sign}{:02}:{:02}", offset / 3600, offset / 60 % 60);
    if !offset.is_multiple_of(60) {
        let _ = write!(out, ":{:02}", offset % 60);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python() {
        // Expected values printed by CPython 3 `repr(float)`.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.0, "1.0"),
            (2.5e100, "2.5e+100"),
            (-3.25, "-3.25"),
            (0.1, "0.1"),
            (1234567890123456.7, "1234567890123456.8"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn json_matches_python_dumps() {
        let value =
            json!([1, -2, 1.5, "a\u{7f}\u{0}\u{8}\u{c}/\u{1F600}é", {"k": null, "t": true}]);
        // json.dumps([1, -2, 1.5, '\x7f\x00\b\f/\U0001F600é', {'k': None, 't': True}])
        assert_eq!(
            to_py_json(&value).unwrap(),
            r#"[1, -2, 1.5, "a\u007f\u0000\b\f/\ud83d\ude00\u00e9", {"k": null, "t": true}]"#
        );
    }

    #[test]
    fn repr_matches_python() {
        let mut out = String::new();
        repr_str("it's", &mut out);
        assert_eq!(out, r#""it's""#);
        out.clear();
        repr_str("a\"b'c", &mut out);
        assert_eq!(out, r#"'a"b\'c'"#);
        out.clear();
        repr_str("\u{7f}\u{0}\t\u{a0}\u{200b}\u{e000}\u{1F600}é\\", &mut out);
        assert_eq!(out, r"'\x7f\x00\t\xa0\u200b\ue000😀é\\'");
        assert_eq!(repr_tuple(&[json!(1)]), "(1,)");
        assert_eq!(repr_tuple(&[]), "()");
        assert_eq!(
            repr_tuple(&[
                json!(2),
                json!("a"),
                json!(null),
                json!([true, 1.0]),
                json!({"x": false})
            ]),
            "(2, 'a', None, [True, 1.0], {'x': False})"
        );
        assert_eq!(truncate_repr("abcdef".into(), 3), "abc...");
        assert_eq!(truncate_repr("abc".into(), 3), "abc");
    }

    #[test]
    fn isoformat_matches_python() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let dt = utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(isoformat(&dt), "2030-01-02T03:04:05+00:00");
        let dt = dt + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(isoformat(&dt), "2030-01-02T03:04:05.123456+00:00");
        let berlin = FixedOffset::east_opt(3600).unwrap();
        let dt = berlin.with_ymd_and_hms(2026, 11, 27, 4, 10, 39).unwrap();
        assert_eq!(isoformat(&dt), "2026-11-27T04:10:39+01:00");
        let west = FixedOffset::west_opt(9 * 3600 + 30 * 60).unwrap();
        let dt = west.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(isoformat(&dt), "2026-01-01T00:00:00-09:30");
    }
}
