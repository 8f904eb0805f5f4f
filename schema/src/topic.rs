//! MQTT topic names and topic filters: validation and matching (MQTT 3.1.1 §4.7, MQTT 5 §4.7).

/// Why a topic or filter is invalid, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TopicError {
    /// What is wrong.
    pub message: String,
    /// Byte offset of the offending part within the topic text.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// How to fix it.
    pub help: String,
    /// True when the problem is a wildcard in a place that needs a concrete topic.
    pub wildcard: bool,
}

/// Longest topic MQTT allows, in bytes.
pub const MAX_TOPIC_LEN: usize = 65_535;

fn common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError {
            message: "an empty topic".into(),
            offset: 0,
            len: 0,
            help: "write a topic such as `sensors/line1/temperature`".into(),
            wildcard: false,
        });
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError {
            message: format!(
                "a topic of {} bytes; MQTT allows {MAX_TOPIC_LEN}",
                topic.len()
            ),
            offset: 0,
            len: topic.len(),
            help: "shorten the topic".into(),
            wildcard: false,
        });
    }
    if let Some(i) = topic.find('\0') {
        return Err(TopicError {
            message: "a NUL character in a topic".into(),
            offset: i,
            len: 1,
            help: "remove the NUL character".into(),
            wildcard: false,
        });
    }
    if topic.starts_with('$') {
        return Err(TopicError {
            message: "topics starting with `$` are reserved for the broker".into(),
            offset: 0,
            len: 1,
            help: "choose a topic that does not start with `$`".into(),
            wildcard: false,
        });
    }
    Ok(())
}

/// Checks an MQTT topic filter: `+` must fill a whole level, `#` must be the whole last level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let mut offset = 0;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        if let Some(pos) = level.find('#') {
            if *level != "#" {
                return Err(TopicError {
                    message: format!(
                        "`#` must be a whole topic level, but this level is `{level}`"
                    ),
                    offset: offset + pos,
                    len: 1,
                    help: format!(
                        "put `#` in a level of its own, e.g. `{}`",
                        suggest(&levels, i, "#")
                    ),
                    wildcard: false,
                });
            }
            if !last {
                return Err(TopicError {
                    message: "`#` must be the last level of a topic filter".into(),
                    offset: offset + pos,
                    len: 1,
                    help: "`#` matches everything below its level; use `+` to match a single level in the middle".into(),
                    wildcard: false,
                });
            }
        }
        if let Some(pos) = level.find('+') {
            if *level != "+" {
                return Err(TopicError {
                    message: format!(
                        "`+` must be a whole topic level, but this level is `{level}`"
                    ),
                    offset: offset + pos,
                    len: 1,
                    help: format!(
                        "put `+` in a level of its own, e.g. `{}`",
                        suggest(&levels, i, "+")
                    ),
                    wildcard: false,
                });
            }
        }
        offset += level.len() + 1;
    }
    Ok(())
}

fn suggest(levels: &[&str], i: usize, wildcard: &str) -> String {
    let mut fixed: Vec<&str> = levels.to_vec();
    fixed[i] = wildcard;
    if wildcard == "#" {
        fixed.truncate(i + 1);
    }
    fixed.join("/")
}

/// Checks a concrete MQTT topic name, as messages are published to: no wildcards.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    common(topic)?;
    if let Some(pos) = topic.find(['+', '#']) {
        return Err(TopicError {
            message: format!(
                "a wildcard `{}` where a concrete topic is needed",
                &topic[pos..pos + 1]
            ),
            offset: pos,
            len: 1,
            help: "messages are published to one concrete topic: replace the wildcard with a level name, e.g. `sensors/line1/temperature`".into(),
            wildcard: true,
        });
    }
    Ok(())
}

/// Whether `topic` matches `filter` (both assumed valid).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "a//b", "/a"] {
            validate_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = validate_filter("a/#/c").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("last level"));
        let e = validate_filter("sensors/temp+").unwrap_err();
        assert_eq!(e.offset, 12);
        assert!(e.help.contains("sensors/+"));
        let e = validate_filter("a/b#").unwrap_err();
        assert!(e.help.contains("a/#"));
        assert!(validate_filter("").is_err());
        assert!(validate_filter("$SYS/#").is_err());
    }

    #[test]
    fn topics() {
        validate_topic("a/b/c").unwrap();
        let e = validate_topic("a/+/c").unwrap_err();
        assert!(e.wildcard);
        assert_eq!(e.offset, 2);
        assert!(validate_topic("a/#").unwrap_err().wildcard);
    }

    #[test]
    fn matching() {
        assert!(matches("sensors/+/temperature", "sensors/l1/temperature"));
        assert!(!matches(
            "sensors/+/temperature",
            "sensors/l1/x/temperature"
        ));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "x/y"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("+/+", "a/b"));
        assert!(!matches("+", "a/b"));
    }
}
