//! Topic validation and subscription pattern matching (docs/protocol.md §6).
//!
//! Owns the topic rules (at most five dot-separated segments of `a-z 0-9 - _`, first segment
//! `events` or `control`) and the pattern language (`+` one segment, `#` the rest, last
//! only). Never does I/O.

use std::fmt;

use crate::wire::error::{TopicRule, WireError};

/// Most segments in a topic or pattern.
pub const MAX_TOPIC_SEGMENTS: usize = 5;

/// First segments a topic may start with.
pub const TOPIC_ROOTS: [&str; 2] = ["events", "control"];

const SINGLE_WILDCARD: &str = "+";
const MULTI_WILDCARD: &str = "#";

/// A validated topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    /// Validates `text` against the topic rules.
    pub fn parse(text: &str) -> Result<Topic, WireError> {
        check_topic(text).map_err(|rule| WireError::InvalidTopic {
            topic: text.to_owned(),
            rule,
        })?;
        Ok(Topic(text.to_owned()))
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a topic without allocating; the rule broken on failure.
pub fn check_topic(text: &str) -> Result<(), TopicRule> {
    let mut count = 0;
    for (index, segment) in text.split('.').enumerate() {
        count += 1;
        if count > MAX_TOPIC_SEGMENTS {
            return Err(TopicRule::TooManySegments);
        }
        check_segment(segment)?;
        if index == 0 && !TOPIC_ROOTS.contains(&segment) {
            return Err(TopicRule::BadFirstSegment);
        }
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), TopicRule> {
    if segment.is_empty() {
        return Err(TopicRule::EmptySegment);
    }
    let allowed = |byte: u8| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
    };
    if segment.bytes().all(allowed) {
        Ok(())
    } else {
        Err(TopicRule::BadCharacter)
    }
}

/// A validated subscription pattern: topic segments, `+` for exactly one segment, and `#` as
/// the last segment for one or more remaining segments.
///
/// `events.#` matches `events.process.start` but not `events` itself: the root alone is not a
/// topic anyone publishes on, and requiring at least one segment keeps `#` unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Validates `text` against the pattern rules. A wildcard may stand in the first segment
    /// (`#` alone subscribes to everything).
    pub fn parse(text: &str) -> Result<Pattern, WireError> {
        check_pattern(text).map_err(|rule| WireError::InvalidPattern {
            pattern: text.to_owned(),
            rule,
        })?;
        Ok(Pattern {
            text: text.to_owned(),
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic_segments = topic.split('.');
        for pattern_segment in self.text.split('.') {
            match (pattern_segment, topic_segments.next()) {
                (MULTI_WILDCARD, Some(_)) => return true,
                (SINGLE_WILDCARD, Some(_)) => {}
                (literal, Some(segment)) if literal == segment => {}
                _ => return false,
            }
        }
        topic_segments.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_pattern(text: &str) -> Result<(), TopicRule> {
    let segments: Vec<&str> = text.split('.').collect();
    if segments.len() > MAX_TOPIC_SEGMENTS {
        return Err(TopicRule::TooManySegments);
    }
    for (index, segment) in segments.iter().enumerate() {
        match *segment {
            SINGLE_WILDCARD => {}
            MULTI_WILDCARD if index + 1 == segments.len() => {}
            MULTI_WILDCARD => return Err(TopicRule::MisplacedWildcard),
            literal if literal.contains(['+', '#']) => return Err(TopicRule::MisplacedWildcard),
            literal => {
                check_segment(literal)?;
                if index == 0 && !TOPIC_ROOTS.contains(&literal) {
                    return Err(TopicRule::BadFirstSegment);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(text: &str) -> Option<TopicRule> {
        check_topic(text).err()
    }

    #[test]
    fn topic_rules() {
        assert_eq!(rule_of("events.process.start"), None);
        assert_eq!(rule_of("control.eventbus.hello"), None);
        assert_eq!(rule_of("events.a-b.c_d.e1.f2"), None);
        assert_eq!(rule_of("events"), None);
        assert_eq!(
            rule_of("events.a.b.c.d.e"),
            Some(TopicRule::TooManySegments)
        );
        assert_eq!(rule_of("events.Process"), Some(TopicRule::BadCharacter));
        assert_eq!(rule_of("events.pro cess"), Some(TopicRule::BadCharacter));
        assert_eq!(rule_of("metrics.cpu"), Some(TopicRule::BadFirstSegment));
        assert_eq!(rule_of(""), Some(TopicRule::EmptySegment));
        assert_eq!(rule_of("events..start"), Some(TopicRule::EmptySegment));
        assert_eq!(rule_of("events.start."), Some(TopicRule::EmptySegment));
        assert_eq!(rule_of("events.+"), Some(TopicRule::BadCharacter));
        assert!(Topic::parse("events.process.stop").is_ok());
        assert!(matches!(
            Topic::parse("events.é"),
            Err(WireError::InvalidTopic {
                rule: TopicRule::BadCharacter,
                ..
            })
        ));
    }

    #[test]
    fn pattern_rules() {
        for good in [
            "events.process.start",
            "events.+.start",
            "events.#",
            "#",
            "+.process.#",
            "control.eventbus.+",
        ] {
            assert!(Pattern::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "events.#.start",
            "events.pro+",
            "events.#x",
            "logs.#",
            "events..#",
            "events.a.b.c.d.#",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_matching() {
        let cases = [
            ("events.process.start", "events.process.start", true),
            ("events.process.start", "events.process.stop", false),
            ("events.process.+", "events.process.stop", true),
            ("events.process.+", "events.process", false),
            ("events.process.+", "events.process.stop.x", false),
            ("events.+.start", "events.process.start", true),
            ("events.#", "events.process.start", true),
            ("events.#", "events.process", true),
            ("events.#", "events", false),
            ("events.#", "control.eventbus.ack", false),
            ("#", "control.eventbus.ack", true),
            ("events.process", "events.process.start", false),
        ];
        for (pattern, topic, expected) in cases {
            let parsed = Pattern::parse(pattern).expect("valid pattern");
            assert_eq!(parsed.matches(topic), expected, "{pattern} vs {topic}");
        }
    }
}
