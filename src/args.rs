//! Value parsers shared by the subcommands' flags.

use std::time::Duration;

/// `500ms`, `90s`, `5m`, `1h`, `1h30m`, `2d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    hearth_executor::health::snooze::parse_duration_units(text, true)
}

/// A clap value parser for durations.
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration: expected e.g. 500ms, 30s, 5m, 1h, 1h30m"))
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_down_to_milliseconds() {
        assert_eq!(parse_duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
        assert!(duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(key_value("rack=r1").unwrap(), ("rack".into(), "r1".into()));
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
    }
}
