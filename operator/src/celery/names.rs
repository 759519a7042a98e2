//! The one definition of a valid Celery task name and queue name. The CRDs' CEL rules are
//! generated from it (refused at `kubectl apply`) and message validation checks it before
//! every push, so what the API server accepts is what the operator sends.

/// Which characters a name may hold, and how long it may be.
pub(crate) struct NameRule {
    /// Characters besides ASCII letters (and digits, when `digit_first`) allowed first.
    first_extra: &'static str,
    digit_first: bool,
    /// Characters besides ASCII letters and digits allowed after the first. `-` comes last,
    /// where a regex character class takes it literally.
    rest_extra: &'static str,
    pub max_len: usize,
}

/// Dotted Python paths and common custom names: `proj.tasks.refresh`, `app:task-1`.
pub(crate) const TASK_NAME: NameRule = NameRule {
    first_extra: "_",
    digit_first: false,
    rest_extra: "_.:-",
    max_len: 255,
};

/// Queue names. Control characters are excluded in particular because the default
/// priority separator is `\x06\x16` and workers split the popped key on it.
pub(crate) const QUEUE_NAME: NameRule = NameRule {
    first_extra: "_.:@/-",
    digit_first: true,
    rest_extra: "_.:@/-",
    max_len: 200,
};

impl NameRule {
    pub(crate) fn allows_first(&self, c: char) -> bool {
        c.is_ascii_alphabetic()
            || (self.digit_first && c.is_ascii_digit())
            || self.first_extra.contains(c)
    }

    pub(crate) fn allows(&self, c: char) -> bool {
        c.is_ascii_alphanumeric() || self.rest_extra.contains(c)
    }

    /// The rule as the RE2 pattern CEL's `matches()` takes.
    pub(crate) fn pattern(&self) -> String {
        let digits = if self.digit_first { "0-9" } else { "" };
        format!(
            "^[A-Za-z{digits}{}][A-Za-z0-9{}]*$",
            self.first_extra, self.rest_extra
        )
    }

    /// The characters allowed after the first, for error messages.
    pub(crate) fn allowed_text(&self) -> String {
        let extra: Vec<String> = self.rest_extra.chars().map(String::from).collect();
        format!("ASCII letters, digits and {}", extra.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regex character class such as `[A-Za-z0-9_.:-]` as a predicate (ranges and
    /// literals only, which is all [`NameRule::pattern`] writes).
    fn class(class: &str) -> impl Fn(char) -> bool + '_ {
        move |c: char| {
            let chars: Vec<char> = class.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                if i + 2 < chars.len() && chars[i + 1] == '-' {
                    if (chars[i]..=chars[i + 2]).contains(&c) {
                        return true;
                    }
                    i += 3;
                } else {
                    if chars[i] == c {
                        return true;
                    }
                    i += 1;
                }
            }
            false
        }
    }

    #[test]
    fn the_cel_pattern_and_the_runtime_check_agree_on_every_character() {
        for rule in [&TASK_NAME, &QUEUE_NAME] {
            let pattern = rule.pattern();
            let inner = pattern
                .strip_prefix("^[")
                .and_then(|p| p.strip_suffix("]*$"))
                .expect("shape");
            let (first, rest) = inner.split_once("][").expect("two classes");
            let (in_first, in_rest) = (class(first), class(rest));
            for c in (0u8..=127).map(char::from).chain(['é', '日', '\u{6}']) {
                assert_eq!(in_first(c), rule.allows_first(c), "{pattern}: first {c:?}");
                assert_eq!(in_rest(c), rule.allows(c), "{pattern}: {c:?}");
            }
        }
    }
}
